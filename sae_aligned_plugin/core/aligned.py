"""Aligned training: the encoder map that makes every feature read its own write direction with gain 1.

Spec: ``shared/papers/aligned_training.md`` §3 (Brzozowski & Chung, arXiv 2605.18629; the parameterisation
is our derivation). All functions take *row* layouts, one row per feature: ``decoder [F, d]`` and
``encoder [F, d]``. SAELens stores ``W_enc`` as ``[d, F]``, so its adapters pass ``W_enc.T``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def aligned_encoder(decoder: Tensor, free: Tensor) -> Tensor:
    """Encoder rows ``e_i = d_i/||d_i||² + (I − d̂_i d̂_iᵀ) u_i`` (spec §3.1), computed in fp32.

    ``⟨e_i, d_i⟩ = 1`` exactly (up to fp32 rounding) for any free rows ``u_i``; the component of ``u_i``
    along ``d_i`` is projected out, so it receives zero gradient. Gradients flow to both ``decoder`` and
    ``free``. The map is homogeneous: ``E(D/c, c·U) = c·E(D, U)`` for a per-row scale ``c > 0``.
    """
    return _AlignedEncoder.apply(decoder.float(), free.float())


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise inner products ``[F, 1]``; einsum runs as a batched matmul, one pass without a temporary."""
    return torch.einsum("fd,fd->f", a, b).unsqueeze(-1)


class _AlignedEncoder(torch.autograd.Function):
    """``e = γ·d + u`` with ``γ = (1 − ⟨d, u⟩)/||d||²``, and its exact vector–Jacobian product.

    Backward, with ``β = ⟨g, d⟩/||d||²``: ``∂L/∂u = g − β·d`` and
    ``∂L/∂d = γ·g − β·u − 2βγ·d = γ·∂L/∂u − β·e``. Written by hand, it makes four passes over ``[F, d]``
    instead of the dozen autograd would make through the formula, and saves no tensor beyond ``e``.
    """

    @staticmethod
    def forward(ctx: Any, decoder: Tensor, free: Tensor) -> Tensor:
        sq_norm = _rowdot(decoder, decoder)
        gamma = (1.0 - _rowdot(decoder, free)) / sq_norm
        encoder = torch.addcmul(free, gamma, decoder)
        _snap_to_alignment_(encoder, decoder, sq_norm)  # zero in exact arithmetic: values are the formula's
        ctx.save_for_backward(decoder, sq_norm, gamma, encoder)
        return encoder

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        decoder, sq_norm, gamma, encoder = ctx.saved_tensors
        beta = _rowdot(grad, decoder) / sq_norm
        grad_free = torch.addcmul(grad, beta, decoder, value=-1.0)
        grad_decoder = torch.addcmul(grad_free * gamma, beta, encoder, value=-1.0)
        return grad_decoder, grad_free


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
    return _snap_to_alignment_(encoder.float().clone(), d, _rowdot(d, d))


def _snap_to_alignment_(rows: Tensor, decoder: Tensor, sq_norm: Tensor) -> Tensor:
    """In place, twice: ``e_i ← e_i + (1 − ⟨e_i, d_i⟩)/||d_i||²·d_i``.

    The second pass removes the fp32 error of the first (cancellation when ``e_i`` has a large component along
    ``d_i``, and the rounding of ``||d_i||²``), so ``|⟨e_i, d_i⟩ − 1| ≲ 1e-7·||e_i||·||d_i||`` for
    ``|⟨e_i, d_i⟩|`` up to ~1e9.
    """
    for _ in range(2):
        rows.addcmul_((1.0 - _rowdot(rows, decoder)) / sq_norm, decoder)
    return rows
