"""Aggregation over seeds, the markdown table, and the alignment-score histograms of ``sae-aligned compare``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sae_aligned_plugin.metrics import plot_alignment_histograms


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested ``metrics`` as ``{"a.b": value}`` (bools and strings skipped)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per numeric metric over seeds: ``mean``, ``std`` (sample std, ddof = 1; 0 for one seed), ``min``, ``max``."""
    flat = [flatten(metrics) for metrics in per_seed]
    out: dict[str, dict[str, float]] = {}
    for key in flat[0] if flat else []:
        values = np.array([entry.get(key, math.nan) for entry in flat], dtype=np.float64)
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out


def _mean_std(scale: float = 1.0, digits: int = 3) -> Callable[[Mapping[str, float] | None], str]:
    def cell(stats: Mapping[str, float] | None) -> str:
        if stats is None or not math.isfinite(stats["mean"]):
            return "—"
        return f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f}"
    return cell


def _maximum(stats: Mapping[str, float] | None) -> str:
    return "—" if stats is None else f"{stats['max']:.1e}"


def _value(stats: Any) -> str:
    return f"{stats:.3f}" if isinstance(stats, float) and math.isfinite(stats) else "—"


# (header, key in the aggregate or, prefixed "stability.", in the stability dict, cell formatter)
TABLE_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("L0", "l0", _mean_std(digits=1)),
    ("EV", "explained_variance", _mean_std()),
    ("dead %", "dead_fraction", _mean_std(scale=100.0, digits=1)),
    ("MCC", "mcc", _mean_std()),
    ("live \\|φ\\| ×10³", "mean_abs_phi_live", _mean_std(scale=1e3, digits=2)),
    ("a_i mean", "alignment.raw_mean", _mean_std()),
    ("a_i std", "alignment.raw_std", _mean_std()),
    ("a_i BC", "alignment.bimodality_raw", _mean_std(digits=2)),
    ("max dev", "alignment.max_abs_deviation_from_one", _maximum),
    ("dec MMCS", "stability.decoder_mmcs", _value),
    ("enc MMCS", "stability.encoder_mmcs", _value),
    ("shared", "stability.hungarian_shared_fraction", _value),
)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per ``{"source", "architecture", "aggregate", "stability"}`` row, in the given order."""
    headers = ["data", "architecture", *(header for header, _, _ in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        signed = row["stability"].get("sign_invariant", False)
        cells = [row["source"], row["architecture"] + (" ±" if signed else "")]
        for _, key, cell in TABLE_COLUMNS:
            if key.startswith("stability."):
                cells.append(cell(row["stability"].get(key.removeprefix("stability."))))
            else:
                cells.append(cell(row["aggregate"].get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


TABLE_LEGEND = """\
Cells are mean ± sample std over seeds. L0: mean nonzero codes per held-out token. EV (explained variance) =
1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the held-out tokens. dead %: latents with no nonzero code on any held-out
token (window stated per source above). MCC: SAELens `eval_sae_on_synthetic_data` (Hungarian match of |cos| between
`W_dec` rows and the true features; synthetic only). live |φ|: mean |φ| of latent co-firing on the held-out tokens
over the pairs of latents that fired on some but not all of them (a latent fires when its code is nonzero; independent latents give about
sqrt(2/(π n)); the all-pairs mean, which dead latents dilute, is `mean_abs_phi` in results.json). a_i = ⟨e_i, d_i⟩ per latent (raw alignment score): mean, std
(the spread) and Sarle's bimodality coefficient BC (> 0.555 suggests bimodality; 0 for a spike); max dev = max over
seeds and latents of |a_i − 1| / (‖e_i‖‖d_i‖) (≤ 1e-6 for an aligned SAE in fp32). dec / enc MMCS: mean max cosine
between the decoder / encoder rows of two seeds (mean of both directions), shared: fraction of Hungarian-matched
latent pairs with decoder and encoder cosine > 0.7; all three averaged over the seed pairs. ±: signed codes
(AbsTopK), so a latent and its negation are one feature and the three stability columns use |cos|."""


def write_histograms(
    plots_dir: Path, source: str, scores: Mapping[str, Mapping[int, NDArray[np.float64]]]
) -> list[Path]:
    """Per architecture one PNG overlaying its seeds, and one PNG for the source overlaying the architectures (seeds
    pooled): ``<source>_<arch>.png`` and ``<source>_all_arms.png``."""
    written = []
    for architecture, by_seed in scores.items():
        written.append(plot_alignment_histograms(
            {f"seed {seed}": values for seed, values in by_seed.items()},
            plots_dir / f"{source}_{architecture}.png",
            title=f"{source} / {architecture}: alignment scores a_i = ⟨e_i, d_i⟩ per seed",
        ))
    written.append(plot_alignment_histograms(
        {f"{architecture} ({len(by_seed)} seeds)": np.concatenate(list(by_seed.values()))
         for architecture, by_seed in scores.items()},
        plots_dir / f"{source}_all_arms.png",
        title=f"{source}: alignment scores a_i = ⟨e_i, d_i⟩, baselines vs aligned (seeds pooled)",
    ))
    return written
