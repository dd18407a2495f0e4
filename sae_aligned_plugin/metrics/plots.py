"""Histogram of per-feature alignment scores for several SAEs on one figure (spec §6, "Alignment score").

Baselines tend to give a spread, often bimodal, distribution; an aligned SAE a spike at exactly 1. Both stay visible
because the histograms are overlaid as outlines on shared bins with a log-scale count axis, and the x range is
clipped to the pooled 0.5–99.5 percentiles (widened to include 1); values outside are counted in the edge bins.
Uses matplotlib's object API (``Figure`` renders with Agg), so no pyplot state or backend switch is touched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sae_aligned_plugin.metrics.alignment import BIMODALITY_THRESHOLD, bimodality_coefficient

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CLIP_PERCENTILES = (0.5, 99.5)
MIN_SPAN = 1e-3  # a range narrower than this (e.g. only aligned SAEs) is widened to ±0.5 around its centre


def _finite(name: str, values: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError(f"plot_alignment_histograms: no finite scores for {name!r}")
    return x


def _shared_range(samples: list[NDArray[np.float64]]) -> tuple[float, float]:
    pooled = np.concatenate(samples)
    low, high = (float(v) for v in np.percentile(pooled, CLIP_PERCENTILES))
    low, high = min(low, 1.0), max(high, 1.0)
    if high - low < MIN_SPAN:
        centre = 0.5 * (low + high)
        low, high = centre - 0.5, centre + 0.5
    return low, high


def _save_atomically(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def plot_alignment_histograms(
    scores: Mapping[str, ArrayLike], path: str | os.PathLike[str], *, title: str | None = None, bins: int = 60
) -> Path:
    """Write one PNG with a histogram per entry of ``scores`` (label → per-feature scores); return its path.

    Each legend entry shows the number of features and Sarle's bimodality coefficient (``BC > 5/9`` suggests
    bimodality). Non-finite scores are dropped; an entry with none left raises ``ValueError``. The file is written
    to a temporary file in the same folder and moved into place with ``os.replace``.
    """
    if not scores:
        raise ValueError("plot_alignment_histograms: no scores given")
    samples = {name: _finite(name, values) for name, values in scores.items()}
    low, high = _shared_range(list(samples.values()))
    edges = np.linspace(low, high, bins + 1)

    from matplotlib.figure import Figure  # imported here so `import sae_aligned_plugin.metrics` stays light

    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    for name, x in samples.items():
        label = f"{name} (F={x.size}, BC={bimodality_coefficient(x):.2f})"
        ax.hist(np.clip(x, low, high), bins=edges, histtype="step", linewidth=1.6, label=label)
    ax.axvline(1.0, color="0.4", linestyle="--", linewidth=1.0)
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_xlabel(f"alignment score (clipped to pooled {CLIP_PERCENTILES[0]}–{CLIP_PERCENTILES[1]} percentiles)")
    ax.set_ylabel("features (log scale)")
    ax.set_title(title or f"Alignment scores (BC > {BIMODALITY_THRESHOLD:.3f} suggests bimodality)")
    ax.legend(fontsize="small")
    fig.tight_layout()

    out = Path(path)
    _save_atomically(fig, out)
    return out
