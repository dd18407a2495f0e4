"""BatchTopK codes kept sparse, with hand-written backward passes (used by the MetaSAE's meta SAE).

A BatchTopK SAE over ``B`` rows with ``m`` latents keeps ``K = k·B`` codes; the meta SAE keeps ``k = 8`` of
``m ≈ 0.09·n`` latents per row (≈ 2 %). Dense autograd would spend three ``B × d × m`` matmuls on the decoder and one
on the encoder's gradient; here the decoder, the codes' gradient and the weight gradients cost ``O(K·d)``, and only
the encoder's forward (needed to pick the top ``K``) stays a dense matmul. Entries are stored twice: row-major
(bags of :func:`embedding_bag` that decode rows) and latent-major (bags that accumulate the weight gradients), so no
``[K, d]`` gather is materialised.

The top ``K`` are selected by :func:`top_flat_indices` (exact, faster than ``topk`` on CPUs, already row-major).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

@dataclass(eq=False)
class SparseCodes:
    """The kept codes of a ``[B, width]`` batch: entry ``j`` is ``values[j]`` at ``(rows[j], cols[j])``, row-major
    (``offsets`` [B] start each row's bag). The latent-major order (``by_col``, ``col_offsets`` [width]) is computed
    on first use (only backward passes need it)."""

    rows: Tensor
    cols: Tensor
    values: Tensor
    offsets: Tensor
    width: int

    @cached_property
    def by_col(self) -> Tensor:
        return self.cols.argsort(stable=True)

    @cached_property
    def col_offsets(self) -> Tensor:
        return _bag_starts(self.cols, self.width)

    def pair_dots(self, left: Tensor, right: Tensor) -> Tensor:
        """``⟨left[rows_j], right[cols_j]⟩`` for every entry ``j`` (``left`` [B, d], ``right`` [width, d]).

        On CPUs in fp32/fp64 a sampled matmul (``torch.sparse.sampled_addmm``: ``O(K·d)``, no ``[K, d]`` gather);
        elsewhere the dense ``left @ rightᵀ`` read at the entries (a GPU's matmul is cheap, its sparse kernels vary).
        """
        if left.device.type != "cpu" or left.dtype not in (torch.float32, torch.float64):
            return (left @ right.T)[self.rows, self.cols]
        crow = torch.cat([self.offsets, self.offsets.new_tensor([self.rows.numel()])])
        with warnings.catch_warnings():       # PyTorch warns once per process that sparse CSR is a beta feature
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            pattern = torch.sparse_csr_tensor(crow, self.cols, left.new_zeros(self.rows.numel()),
                                              size=(left.shape[0], self.width), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, left, right.T, beta=0.0).values()

    def dense(self, n_rows: int, width: int) -> Tensor:
        """The ``[n_rows, width]`` code matrix (for tests and small inputs)."""
        out = torch.zeros(n_rows, width, dtype=self.values.dtype, device=self.values.device)
        return out.index_put((self.rows, self.cols), self.values)


def _bag_starts(keys: Tensor, n_bags: int) -> Tensor:
    counts = torch.bincount(keys, minlength=n_bags)
    return counts.cumsum(0) - counts


def top_flat_indices(flat: Tensor, count: int, *, sample_size: int = 16384) -> Tensor:
    """Ascending indices of the ``count`` largest *positive* entries of a 1-D ``flat``: exactly those of
    ``relu(flat).topk(count)``, except that entries ``<= 0`` are left out (a zero code decodes to nothing); ties at
    the ``count``-th value go to the lowest indices. A few times faster than ``topk`` on CPUs: the quantile of a
    fixed random sample gives a threshold a little below the ``count``-th value, and the exact selection runs on the
    few entries above it; a full ``topk`` is the fallback when the estimate misses."""
    n = flat.numel()
    if count >= n:
        return (flat > 0).nonzero().squeeze(1)
    generator = torch.Generator(device=flat.device).manual_seed(0)   # fixed, and the global RNG does not move
    sample = flat[torch.randint(0, n, (min(sample_size, n),), generator=generator, device=flat.device)]
    above = min(sample.numel(), int(1.3 * count * sample.numel() / n) + 64)
    threshold = sample.kthvalue(sample.numel() - above + 1).values if above < sample.numel() else flat.new_zeros(())
    candidates = (flat > threshold.clamp_min(0)).nonzero().squeeze(1)
    if candidates.numel() <= count and float(threshold) <= 0:
        return candidates                                      # every positive entry, no more than count
    if candidates.numel() >= count:
        values = flat[candidates]
        kth = values.kthvalue(values.numel() - count + 1).values
        keep = values > kth
        tied = (values == kth).nonzero().squeeze(1)            # ties at the count-th value: the first ones in order
        keep[tied[: count - int(keep.sum())]] = True
        return candidates[keep]
    top = flat.topk(count, sorted=False).indices
    return top[flat[top] > 0].sort().values


def batch_topk(pre: Tensor, k: float) -> SparseCodes:
    """The ``int(k·B)`` largest entries of ``relu(pre)`` over the whole ``[B, m]`` batch (BatchTopK, §1.1 of the
    MetaSAE spec), as :class:`SparseCodes` with detached values (see :func:`encode_values` for gradients)."""
    n_rows, width = pre.shape
    with torch.no_grad():
        flat = pre.detach().flatten()
        index = top_flat_indices(flat, int(k * n_rows))
        rows = index // width
        return SparseCodes(rows, index % width, flat[index], _bag_starts(rows, n_rows), width)


def _bag_sum(table: Tensor, codes: SparseCodes, weights: Tensor, latent_major: bool) -> Tensor:
    """Row-major: ``out[r] = Σ_j w_j table[cols_j]`` ([B, d]); latent-major: ``out[c] = Σ_j w_j table[rows_j]`` ([m, d])."""
    if latent_major:
        return F.embedding_bag(codes.rows[codes.by_col], table, codes.col_offsets, mode="sum",
                               per_sample_weights=weights[codes.by_col])
    return F.embedding_bag(codes.cols, table, codes.offsets, mode="sum", per_sample_weights=weights)


class _Decode(torch.autograd.Function):
    """``x̂[r] = Σ_{j in row r} v_j · W_dec[c_j] + b``; backward ``∂v_j = ⟨g[r_j], W_dec[c_j]⟩``
    (:meth:`SparseCodes.pair_dots`), ``∂W_dec[c] = Σ_{j: c_j = c} v_j g[r_j]``, ``∂b = Σ_r g[r]``."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, decoder: Tensor, bias: Tensor | None, codes: SparseCodes) -> Tensor:
        ctx.save_for_backward(values, decoder)
        ctx.codes = codes
        out = _bag_sum(decoder, codes, values, latent_major=False)
        return out if bias is None else out.add_(bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None, None]:
        values, decoder = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        grad = grad.contiguous()
        grad_bias = grad.sum(dim=0) if ctx.needs_input_grad[2] else None
        return codes.pair_dots(grad, decoder), _bag_sum(grad, codes, values, latent_major=True), grad_bias, None


class _EncodeValues(torch.autograd.Function):
    """The kept codes ``v_j = relu(⟨x[r_j] − b, W_enc[:, c_j]⟩)`` as a function of ``W_enc`` and ``b`` (``x`` is data).

    Backward with ``s_j = ∂v_j · 1[v_j > 0]`` and ``S_c = Σ_{j: c_j = c} s_j``:
    ``∂W_enc[:, c] = Σ_{j: c_j = c} s_j x[r_j] − b·S_c`` and ``∂b = −W_enc S``.
    """

    @staticmethod
    def forward(ctx: Any, encoder: Tensor, bias: Tensor, x: Tensor, codes: SparseCodes) -> Tensor:
        ctx.save_for_backward(encoder, bias, x)
        ctx.codes = codes
        return codes.values.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        encoder, bias, x = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        slope = grad * (codes.values > 0)
        per_latent = torch.zeros(encoder.shape[1], dtype=slope.dtype, device=slope.device).index_add_(
            0, codes.cols, slope)
        grad_encoder = _bag_sum(x, codes, slope, latent_major=True).T - torch.outer(bias, per_latent)
        return grad_encoder, -(encoder @ per_latent), None, None


def encode_values(encoder: Tensor, bias: Tensor, x: Tensor, codes: SparseCodes) -> Tensor:
    """:class:`SparseCodes` ``values`` with gradients to ``encoder`` and ``bias`` (the codes must come from
    ``batch_topk((x − bias) @ encoder, k)``)."""
    return _EncodeValues.apply(encoder, bias, x.detach(), codes)


def decode(values: Tensor, decoder: Tensor, codes: SparseCodes, bias: Tensor | None = None) -> Tensor:
    """``Σ_j values_j · decoder[cols_j] (+ bias)`` per row ([B, d]), differentiable w.r.t. ``values``, ``decoder``
    and ``bias``."""
    return _Decode.apply(values, decoder, bias, codes)
