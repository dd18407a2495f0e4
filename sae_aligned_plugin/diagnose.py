"""``sae-aligned diagnose``: the plugin's metrics for any SAELens SAE, as a JSON report and PNG plots.

* Alignment scores ``⟨e_i, d_i⟩`` (three normalisations), their bimodality and the deviation from 1;
* decoder row norms;
* dead latents: over given activations (or the tiny offline model's), and from SAELens's training-window
  ``sparsity.safetensors`` when the folder has one; the ``l0`` / ``num_dead_features`` SAELens stored in
  the metadata are copied as they are;
* with a second SAE: cross-seed stability (mean max cosine both ways, Hungarian matching).

Plots: ``alignment_histogram.png`` (both SAEs when comparing) and ``stability_max_cosine.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from sae_aligned_plugin.metrics import alignment_report, cross_seed_stability, dead_fraction, plot_alignment_histograms
from sae_aligned_plugin.metrics.plots import _save_atomically
from sae_aligned_plugin.validation import check_activation_width

REPORT_NAME = "diagnostics.json"
DEAD_LOG10_SPARSITY = -9.99
"""SAELens stores ``log10(firing frequency + 1e-10)``: a latent at or below this never fired in the window."""


def describe_sae(sae: Any) -> dict[str, Any]:
    """Identity of the SAE: architectures, sizes and where it reads activations from."""
    metadata = sae.cfg.metadata
    return {
        "architecture": sae.cfg.architecture(),
        "training_architecture": getattr(metadata, "training_architecture", None) or sae.cfg.architecture(),
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "k": getattr(sae.cfg, "k", None),
        "model_name": metadata.model_name,
        "hook_name": metadata.hook_name,
        "context_size": metadata.context_size,
        "meta_sae_of": metadata.meta_sae_of,  # set on a MetaSAE's exported meta SAE
    }


def training_sparsity(folder: str | Path | None) -> dict[str, float] | None:
    """Dead fraction from a SAELens ``sparsity.safetensors`` (training window), or None without one."""
    path = Path(folder) / "sparsity.safetensors" if folder is not None else None
    if path is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    log_sparsity = load_file(str(path))["sparsity"].double()
    dead = int((log_sparsity <= DEAD_LOG10_SPARSITY).sum())
    return {"n_dead": float(dead), "fraction_dead": dead / log_sparsity.numel(),
            "mean_firing_rate": float((10**log_sparsity).mean())}


def weight_diagnostics(sae: Any, folder: str | Path | None = None) -> dict[str, Any]:
    """Everything that needs no activations: identity, alignment, decoder norms, training-time sparsity."""
    norms = sae.W_dec.detach().float().norm(dim=-1)
    metadata = sae.cfg.metadata
    return {
        "sae": describe_sae(sae),
        "alignment": alignment_report(sae).summary(),
        "decoder_norms": {"min": float(norms.min()), "max": float(norms.max()), "mean": float(norms.mean())},
        "training_sparsity": training_sparsity(folder),
        "saelens_metadata": {key: metadata.get(key) for key in ("l0", "num_dead_features") if key in metadata},
    }


def activation_batches(activations: Tensor, batch_size: int = 4096) -> Iterator[Tensor]:
    """Rows ``[N, d_in]`` (leading dimensions flattened) in batches."""
    rows = activations.reshape(-1, activations.shape[-1])
    yield from rows.split(batch_size)


def model_activations(model: Any, tokens: Any, hook_name: str, n_rows: int = 64, batch_size: int = 16) -> Tensor:
    """Activations at ``hook_name`` of ``model`` on the first ``n_rows`` token rows (an ``input_ids`` dataset)."""
    ids = torch.tensor(tokens["input_ids"][:n_rows])
    chunks = []
    with torch.no_grad():
        for batch in ids.split(batch_size):
            _, cache = model.run_with_cache(batch, names_filter=hook_name)
            chunks.append(cache[hook_name])
    return torch.cat(chunks)


def _plot_max_cosine(report: Any, names: tuple[str, str], path: Path) -> Path:
    """Histogram of each feature's best decoder and encoder cosine in the other SAE."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    bins = np.linspace(-1.0, 1.0, 81)
    for label, values in [(f"decoder {names[0]}→{names[1]}", report.decoder_max_cos_a),
                          (f"decoder {names[1]}→{names[0]}", report.decoder_max_cos_b),
                          (f"encoder {names[0]}→{names[1]}", report.encoder_max_cos_a)]:
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{label} (mean {values.mean():.3f})")
    ax.set_xlabel("max cosine similarity to the other SAE's features")
    ax.set_ylabel("features")
    ax.set_title("Cross-SAE stability")
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save_atomically(fig, path)
    return path


def _checked(batch: Tensor, d_in: int) -> Tensor:
    check_activation_width(batch, d_in)
    return batch


def _finite(value: Any) -> Any:
    """JSON-safe values: NaN/inf become None, nested containers recursively."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def diagnose(
    sae: Any,
    output_dir: str | Path,
    *,
    name: str = "sae",
    folder: str | Path | None = None,
    activations: Iterable[Tensor] | None = None,
    other: Any = None,
    other_name: str = "other",
    hungarian: bool = True,
) -> dict[str, Any]:
    """Write ``diagnostics.json`` and the plots to ``output_dir``; return the report.

    ``folder`` is the SAE's folder (for ``sparsity.safetensors``); ``activations`` batches ``[..., d_in]`` for
    the dead fraction (``|z| > 0``, so signed codes count); ``other`` a second SAE for the stability metrics.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"name": name, **weight_diagnostics(sae, folder), "dead": None, "stability": None}
    if activations is not None:
        checked = (_checked(batch, sae.cfg.d_in) for batch in activations)
        with torch.no_grad():
            report["dead"] = dead_fraction(sae.encode, checked, d_sae=sae.cfg.d_sae).summary()
    scores = {name: alignment_report(sae).raw}
    plots = []
    if other is not None:
        stability = cross_seed_stability(sae, other, hungarian=hungarian)
        report["stability"] = {"other": other_name, **stability.summary()}
        report["other"] = describe_sae(other)
        scores[other_name] = alignment_report(other).raw
        plots.append(_plot_max_cosine(stability, (name, other_name), out / "stability_max_cosine.png"))
    plots.append(plot_alignment_histograms(scores, out / "alignment_histogram.png"))
    report["plots"] = sorted(path.name for path in plots)
    (out / REPORT_NAME).write_text(json.dumps(_finite(report), indent=2))
    return report
