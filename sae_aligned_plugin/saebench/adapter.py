"""Make any SAELens SAE SAEBench-ready: metadata that SAEBench reads, unit-norm decoder rows, inference form.

SAEBench's ``load_and_format_sae`` uses an ``SAE`` object as given: it reads ``cfg.metadata.model_name`` and
``hook_name`` (and, in the core eval, ``context_size`` and ``prepend_bos``), and it only *warns* about decoder rows
that are not unit norm. :func:`prepare_sae` checks or fills those fields (a clear :class:`MissingMetadataError`
names the missing one) and folds the decoder norms into the encoder where that is exact.

Aligned SAEs keep ``⟨e_i, d_i⟩ = 1`` under the fold: it maps ``(e_i, b_enc_i, d_i) → (n_i e_i, n_i b_enc_i, d_i/n_i)``.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import torch

from sae_aligned_plugin.saelens.registry import plugin_families

CORE_METADATA = ("model_name", "hook_name", "context_size", "prepend_bos")
"""Metadata fields SAEBench's core eval reads (``ActivationsStore.from_sae`` needs the last two)."""

BASE_METADATA = ("model_name", "hook_name")
"""Metadata fields every SAEBench eval reads (``_standardize_sae_cfg`` raises without them)."""

_WHY = {
    "model_name": "the language model SAEBench runs (a TransformerLens name, e.g. 'pythia-160m-deduped')",
    "hook_name": "the hook the SAE reads, e.g. 'blocks.8.hook_resid_post'",
    "context_size": "the token sequence length of the eval batches, e.g. 1024",
    "prepend_bos": "whether each sequence starts with a BOS token (true/false)",
}

UNIT_NORM_ATOL = 1e-5
SIGNED_CODE_BASES = frozenset({"abstopk"})
"""Base architectures whose codes can be negative (SAEBench counts only ``> 0`` as firing)."""


class MissingMetadataError(ValueError):
    """An SAE lacks a metadata field SAEBench needs; the message names it and how to supply it."""


def to_inference_sae(sae: Any) -> Any:
    """The inference ``SAE`` of ``sae``: returned as is, or exported (``save_inference_model``) and reloaded when
    it is a ``TrainingSAE`` (plugin exports are plain SAELens classes, as SAEBench expects)."""
    from sae_lens import SAE, TrainingSAE

    if not isinstance(sae, TrainingSAE):
        return sae
    from sae_aligned_plugin.saelens.loading import load_sae

    with tempfile.TemporaryDirectory(prefix="sae_aligned_export_") as folder:
        sae.save_inference_model(folder)
        loaded = load_sae(folder, device=str(sae.device))
    assert isinstance(loaded, SAE)
    return loaded


def fill_metadata(sae: Any, required: tuple[str, ...] = CORE_METADATA, **values: Any) -> None:
    """Set the given metadata ``values`` (``None`` leaves a field as is), then check ``required`` fields."""
    metadata = sae.cfg.metadata
    for name, value in values.items():
        if value is not None:
            setattr(metadata, name, value)
    for name in required:
        if getattr(metadata, name, None) is None:
            flag = "--" + name.replace("_", "-")
            raise MissingMetadataError(
                f"SAE metadata is missing {name!r}: {_WHY.get(name, 'needed by SAEBench')}. Set it in cfg.json "
                f"under 'metadata', or pass {name}=... (CLI: {flag})."
            )


def decoder_norm_range(sae: Any) -> tuple[float, float]:
    """``(min, max)`` of the decoder row norms."""
    norms = sae.W_dec.detach().float().norm(dim=-1)
    return float(norms.min()), float(norms.max())


@torch.no_grad()
def unit_norm_decoder(sae: Any) -> str:
    """Fold the decoder row norms into the encoder with the SAE's own ``fold_W_dec_norm`` when they are not 1.

    Returns what happened: ``"unit"`` (already unit norm), ``"folded"``, or ``"kept"`` when the architecture
    cannot fold exactly (TopK without ``rescale_acts_by_decoder_norm``: the fold would change the top-k choice);
    SAEBench then only prints a warning, and a ``UserWarning`` says so here.
    """
    low, high = decoder_norm_range(sae)
    if max(abs(low - 1.0), abs(high - 1.0)) <= UNIT_NORM_ATOL:
        return "unit"
    try:
        sae.fold_W_dec_norm()
    except NotImplementedError as error:
        warnings.warn(f"decoder rows are not unit norm (range {low:.4g}..{high:.4g}) and cannot be folded: {error}",
                      stacklevel=2)
        return "kept"
    return "folded"


def training_architecture(sae: Any) -> str:
    """The architecture the SAE was trained as (``metadata.training_architecture``), else its own."""
    return str(getattr(sae.cfg.metadata, "training_architecture", None) or sae.cfg.architecture())


def has_signed_codes(sae: Any) -> bool:
    """Whether the SAE's codes can be negative (AbsTopK-type SAEs such as iSAE).

    SAEBench's ``feature_density`` and ``frac_alive`` count only positive codes, so such SAEs look partly dead
    there; ``sparsity.l0`` counts ``!= 0`` and is correct.
    """
    return architecture_has_signed_codes(sae.cfg.architecture(), training_architecture(sae))


def architecture_has_signed_codes(*architectures: str) -> bool:
    """Whether any of the named architectures, or the bases they are built on, has signed codes (``abstopk``)."""
    families = plugin_families()
    pending, seen = set(architectures), set()
    while pending:  # follow each plugin family to its base (aligned_isae → isae → abstopk)
        name = pending.pop()
        seen.add(name)
        if name in families and families[name].base not in seen:
            pending.add(families[name].base)
    return bool(seen & SIGNED_CODE_BASES)


def prepare_sae(
    sae: Any,
    *,
    required: tuple[str, ...] = CORE_METADATA,
    model_name: str | None = None,
    hook_name: str | None = None,
    context_size: int | None = None,
    prepend_bos: bool | None = None,
) -> Any:
    """An SAEBench-ready inference SAE: metadata filled and checked, decoder rows unit norm where exact.

    ``sae`` may be a SAELens ``SAE`` or ``TrainingSAE`` (exported first). An inference SAE is modified in place,
    like SAEBench's own loader does (``fold_W_dec_norm``), and returned. The keyword values override the
    metadata; ``required`` lists the fields that must then be set (default: the four the core eval reads).
    """
    sae = to_inference_sae(sae)
    fill_metadata(sae, required, model_name=model_name, hook_name=hook_name, context_size=context_size,
                  prepend_bos=prepend_bos)
    unit_norm_decoder(sae)
    return sae
