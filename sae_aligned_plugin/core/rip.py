"""Approximate RIP (aRIP) of a dictionary on observed supports: the training regulariser and the exact measurements.

Spec: ``shared/papers/isae.md`` §4 (Nelson, Karaletsos & Locatello, *Toward Identifiable Sparse Autoencoders*,
Def. 3.3, Eq. 6–7). Layouts: ``decoder [K, N]`` holds one atom per row (SAELens ``W_dec``); a support is a
``[..., m]`` tensor of atom indices, one row per sample.

* :func:`arip_estimate` is the authors' scale-invariant Gaussian-probe estimator (the regulariser, weight 0.1, and
  the reported ``R_S``).
* :func:`arip_exact` is the Monte-Carlo-free value of the same quantity per sample, ``|S|·tr(G_S²)/tr(G_S)² − 1``.
* :func:`local_rip_constant` is Def. 3.3's ``δ_S = ‖G_S − I‖_op`` (the paper does not report it).

Nothing here builds a ``[K, K]`` Gram matrix, or a ``[B, K]`` or ``[B, m, N]`` temporary for the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

GATHER_CHUNK_ELEMENTS = 1 << 22
"""Largest temporary block (elements) the chunked kernels hold at once (16 MiB in fp32)."""


def sparse_rows_matmul(values: Tensor, indices: Tensor, matrix: Tensor) -> Tensor:
    """``Σ_j values[..., j] · matrix[indices[..., j]]``: ``z @ matrix`` for a sparse ``z`` given by ``(values, indices)``.

    One ``embedding_bag`` (sum mode): ``O(B·m·N)`` time, no dense ``[B, K]`` operand; differentiable with respect to
    ``values`` and ``matrix``.
    """
    width = indices.shape[-1]
    flat = F.embedding_bag(indices.reshape(-1, width), matrix, per_sample_weights=values.reshape(-1, width).to(matrix.dtype),
                           mode="sum")
    return flat.reshape(*indices.shape[:-1], matrix.shape[-1])


def _batch_chunk(indices: Tensor, width: int) -> int:
    return max(1, GATHER_CHUNK_ELEMENTS // max(1, indices.shape[-1] * width))


class _GatheredDots(torch.autograd.Function):
    """``out[b, j] = ⟨W[idx[b, j]], v[b]⟩`` for ``idx [B, m]``, ``v [B, N]``.

    Forward: ``(v Wᵀ)`` in row blocks of at most ``GATHER_CHUNK_ELEMENTS`` entries, gathered at ``idx`` (one dense
    matmul: on CPU and GPU this beats gathering ``[B, m, N]`` rows, which is memory-bound). Saves only
    ``(W, idx, v)``. Backward, ``O(B·m·N)``: ``∂v[b] = Σ_j g[b, j]·W[idx[b, j]]`` (an ``embedding_bag``) and
    ``∂W = Aᵀ v`` with ``A`` the sparse ``[B, K]`` matrix holding ``g`` at ``idx`` (one sparse matmul).
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, indices: Tensor, vectors: Tensor) -> Tensor:
        out = vectors.new_empty(indices.shape)
        step = max(1, GATHER_CHUNK_ELEMENTS // weight.shape[0])
        for start in range(0, indices.shape[0], step):
            rows = slice(start, start + step)
            out[rows] = (vectors[rows] @ weight.T).gather(-1, indices[rows])
        ctx.save_for_backward(weight, indices, vectors)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        weight, indices, vectors = ctx.saved_tensors
        grad_vectors = sparse_rows_matmul(grad, indices, weight) if ctx.needs_input_grad[2] else None
        grad_weight = None
        if ctx.needs_input_grad[0]:
            batch, width = indices.shape
            rows = torch.arange(batch, device=indices.device).repeat_interleave(width)
            scatter = torch.sparse_coo_tensor(torch.stack([indices.reshape(-1), rows]), grad.reshape(-1),
                                              (weight.shape[0], batch), check_invariants=False)
            grad_weight = torch.sparse.mm(scatter, vectors.to(grad.dtype)).to(weight.dtype)
        return grad_weight, None, grad_vectors


def gathered_dots(weight: Tensor, indices: Tensor, vectors: Tensor) -> Tensor:
    """``[B, m]`` inner products of the rows ``weight[indices[b]]`` with ``vectors[b]`` (``D_Sᵀ v`` per sample)."""
    return _GatheredDots.apply(weight, indices, vectors)


def probe_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A generator for the aRIP probe seeded with ``seed`` (callers key it on the step for reproducibility)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def arip_estimate(decoder: Tensor, support: Tensor, probe: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Scale-invariant aRIP estimate ``R̂ = |S|·mean_b‖G_S n_b‖² / (mean_b‖D_S n_b‖²)² − 1`` (spec §4, code step 4).

    ``support [B, m]``: per sample the atom set ``S`` (the top ``2k`` pre-activations in training). ``probe``: the
    Gaussian ``n [B, m]`` (drawn from ``generator`` if omitted). With unit atoms ``E‖D_S n‖² = |S|`` and the
    expectation is Eq. 6's ``mean_S (1/|S|) Σ_i (λ_i(G_S) − 1)²``; it is invariant to rescaling ``decoder``.
    """
    if support.ndim != 2:
        raise ValueError(f"support must be [batch, m], got shape {tuple(support.shape)}")
    if probe is None:
        probe = torch.randn(support.shape, generator=generator, device=support.device, dtype=decoder.dtype)
    p = sparse_rows_matmul(probe, support, decoder)  # D_S n, [B, N]
    q = gathered_dots(decoder, support, p)  # D_Sᵀ D_S n, [B, m]
    return q.pow(2).sum(-1).mean() / p.pow(2).sum(-1).mean().pow(2) * support.shape[-1] - 1.0


def _support_grams(decoder: Tensor, support: Tensor, valid: Tensor | None) -> Tensor:
    """``G_S = D_S D_Sᵀ`` per sample, ``[B, m, m]``, with padded (invalid) rows and columns zeroed."""
    rows = decoder[support.clamp_min(0)].float()
    if valid is not None:
        rows = rows * valid.unsqueeze(-1)
    return rows @ rows.transpose(-1, -2)


def _chunked(decoder: Tensor, support: Tensor, valid: Tensor | None, fn: Any) -> Tensor:
    step = _batch_chunk(support, max(decoder.shape[-1], support.shape[-1]))
    parts = []
    for start in range(0, support.shape[0], step):
        rows = slice(start, start + step)
        parts.append(fn(_support_grams(decoder, support[rows], None if valid is None else valid[rows]),
                        None if valid is None else valid[rows]))
    return torch.cat(parts)


@torch.no_grad()
def arip_exact(decoder: Tensor, support: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-sample ``r(S) = |S|·tr(G_S²)/tr(G_S)² − 1`` (``[B]``, fp32): Eq. 6 for unit atoms, scale-invariant always.

    ``valid [B, m]`` (bool) marks real entries when supports have different sizes (padding is ignored).
    """

    def per_sample(gram: Tensor, mask: Tensor | None) -> Tensor:
        size = gram.new_full(gram.shape[:1], gram.shape[-1]) if mask is None else mask.sum(-1).float()
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        return size * gram.pow(2).sum((-2, -1)) / trace.pow(2).clamp_min(torch.finfo(gram.dtype).tiny) - 1.0

    return _chunked(decoder, support, valid, per_sample)


@torch.no_grad()
def local_rip_constant(decoder: Tensor, support: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-sample ``δ_S = ‖D_SᵀD_S − I‖_op = max_i |λ_i(G_S) − 1|`` (Def. 3.3; ``[B]``, fp32).

    0 exactly for orthonormal atoms on ``S``. Padded entries (``valid`` false) contribute a zero row and column.
    """

    def per_sample(gram: Tensor, mask: Tensor | None) -> Tensor:
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        deviation = gram - eye if mask is None else gram - eye * mask.unsqueeze(-1).float()
        return torch.linalg.eigvalsh(deviation).abs().amax(-1)

    return _chunked(decoder, support, valid, per_sample)
