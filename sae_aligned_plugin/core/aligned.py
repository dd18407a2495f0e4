"""Aligned training: the encoder map that makes every feature read its own write direction with gain 1.

Spec: ``shared/papers/aligned_training.md`` §3 (Brzozowski & Chung, arXiv 2605.18629; the parameterisation
is our derivation). All functions take *row* layouts, one row per feature: ``decoder [F, d]`` and
``encoder [F, d]``. SAELens stores ``W_enc`` as ``[d, F]``, so its adapters pass ``W_enc.T``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def aligned_encoder(decoder: Tensor, free: Tensor) -> Tensor:
    """Encoder rows ``e_i = d_i/||d_i||² + (I − d̂_i d̂_iᵀ) u_i`` (spec §3.1), computed in fp32.

    ``⟨e_i, d_i⟩ = 1`` exactly (up to fp32 rounding) for any free rows ``u_i``; the component of ``u_i``
    along ``d_i`` is projected out, so it receives zero gradient. Gradients flow to both ``decoder`` and
    ``free``. The map is homogeneous: ``E(D/c, c·U) = c·E(D, U)`` for a per-row scale ``c > 0``.
    """
    d = decoder.float()
    u = free.float()
    sq_norm = d.pow(2).sum(dim=-1, keepdim=True)
    # (d̂·u) d̂ = ((d·u)/||d||²) d, so a single coefficient serves both terms.
    return (1.0 - (d * u).sum(dim=-1, keepdim=True)) / sq_norm * d + u


def alignment_scores(encoder: Tensor, decoder: Tensor) -> Tensor:
    """Raw alignment score ``a_i = ⟨e_i, d_i⟩`` per feature (spec §2), in fp32. Rows are features."""
    return (encoder.float() * decoder.float()).sum(dim=-1)


@torch.no_grad()
def project_encoder_to_alignment(encoder: Tensor, decoder: Tensor) -> Tensor:
    """Projected-gradient ablation (spec §3.3): ``e_i ← e_i − (⟨e_i, d_i⟩ − 1)·d_i/||d_i||²``.

    Not the method: a snap applied after an optimiser step to a free encoder, kept for the ablation.
    Returns the projected rows in fp32; the caller copies them into its parameter.
    """
    d = decoder.float()
    excess = alignment_scores(encoder, d) - 1.0
    return encoder.float() - (excess / d.pow(2).sum(dim=-1)).unsqueeze(-1) * d
