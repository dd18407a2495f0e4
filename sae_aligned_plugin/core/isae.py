"""Identifiable SAEs (iSAE, iSAE-ME): the model and its training loss, once, in plain torch.

Spec: ``shared/papers/isae.md`` (Nelson, Karaletsos & Locatello, ICML 2026). Layouts are SAELens's:
``W_enc [N, K]``, ``W_dec [K, N]`` (one atom per row), intercept ``b [N]``; codes are ``[..., K]``.

Forward (spec Summary; §1, §2)::

    x_n   = (x − mean_j x_j) / ‖x − mean_j x_j‖                  per-sample centring + unit norm (undone after)
    z⁽¹⁾  = AbsTopK_k(W(x_n − b))                                  iSAE (Eq. 4); TopK baseline: ReLU then top-k
    z⁽ᵗ⁾  = AbsTopK_k(z⁽ᵗ⁻¹⁾S + W(x_n − b)),  S = I − F            iSAE-ME (Eq. 10), t = 2..T; F full or U Vᵀ
    x̂_n   = z D + b                                                tied intercept, unit-norm atoms
    L     = mean(x_n − x̂_n)²/σ² + c_rip·R̂_aRIP + c_aux·AuxK + c_l1·Σ|z|/(B·k)

``z`` is a row vector, so the step is ``z ↦ z − z F`` (the authors' ``z @ (I − F)``); ``F₀ = DᵀD/(1.1·λ_max)``
is symmetric, so both conventions start equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from sae_aligned_plugin.core.rip import arip_estimate, probe_generator, sparse_rows_matmul

NORM_FLOOR = 1e-8
"""Samples whose centred norm is below this are left unscaled (the authors' convention), so no NaN appears."""
ISTA_MARGIN = 1.1
"""``F₀ = DᵀD / (ISTA_MARGIN · λ_max(DᵀD))`` (spec §2)."""
PROBE_SEED_STRIDE = 1_000_003
"""The aRIP probe of training step ``t`` is seeded with ``probe_seed · PROBE_SEED_STRIDE + t``."""


# ----------------------------------------------------------------------------------------------- normalisation


def unit_sphere(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_n, mean, norm)`` with ``x_n = (x − mean)/norm`` over the last dimension (spec §1.1); ``mean, norm [..., 1]``."""
    mean = x.mean(dim=-1, keepdim=True)
    centred = x - mean
    norm = centred.norm(dim=-1, keepdim=True)
    norm = torch.where(norm < NORM_FLOOR, torch.ones_like(norm), norm)
    return centred / norm, mean, norm


def undo_unit_sphere(x_n: Tensor, mean: Tensor, norm: Tensor) -> Tensor:
    """Inverse of :func:`unit_sphere`: ``x_n·norm + mean`` (exact up to rounding)."""
    return x_n * norm + mean


class SphereStatistics:
    """Remembers the ``(mean, norm)`` of the last :meth:`apply` so that :meth:`undo` maps outputs back to input units.

    Used by ``encode``/``decode`` pairs: ``decode`` after ``encode`` of the same batch is exact; ``decode`` without a
    matching ``encode`` (no statistics, or another batch shape) raises instead of returning wrong units.
    """

    def __init__(self) -> None:
        self._last: tuple[Tensor, Tensor] | None = None

    def apply(self, x: Tensor) -> Tensor:
        x_n, mean, norm = unit_sphere(x)
        self._last = (mean, norm)
        return x_n

    def undo(self, x_n: Tensor) -> Tensor:
        if self._last is None:
            raise RuntimeError(
                "decode() needs the per-sample mean and norm of the matching encode() call: this SAE centres and "
                "unit-normalises each input and undoes it after decoding. Call encode(x) first (or forward(x))."
            )
        mean, norm = self._last
        if mean.shape[:-1] != x_n.shape[:-1]:
            raise RuntimeError(
                f"decode() got codes for batch shape {tuple(x_n.shape[:-1])} but the last encode() saw batch shape "
                f"{tuple(mean.shape[:-1])}; decode the codes of the last encoded batch"
            )
        return undo_unit_sphere(x_n, mean.to(x_n.dtype), norm.to(x_n.dtype))


# ----------------------------------------------------------------------------------------------- sparsifiers


class Codes(NamedTuple):
    """k-sparse codes as ``values``/``indices [..., k]``; ``pre`` is the (last step's) pre-activation ``[..., K]``;
    ``support [..., m]`` the top-``m`` indices of ``pre`` when requested (its first ``k`` are ``indices``)."""

    values: Tensor
    indices: Tensor
    pre: Tensor
    support: Tensor | None = None

    def dense(self) -> Tensor:
        """The codes as a dense ``[..., K]`` tensor (differentiable in ``values``)."""
        return torch.zeros_like(self.pre).scatter(-1, self.indices, self.values.to(self.pre.dtype))


def select_topk(pre: Tensor, k: int, *, signed: bool = True, support: int = 0) -> Codes:
    """AbsTopK_k (Eq. 4: the ``k`` largest ``|pre|`` keep their signs) or, ``signed=False``, the TopK baseline
    (the ``k`` largest ``pre``, then ReLU). ``support > k`` also returns the top-``support`` indices by the same
    score; the code's ``k`` are then picked among those (one ``[.., K]`` and one ``[.., support]`` ``topk``)."""
    with torch.no_grad():
        score = pre.abs() if signed else pre
        indices = top = torch.topk(score, max(k, support), dim=-1, sorted=False).indices
        if support > k:
            indices = top.gather(-1, torch.topk(score.gather(-1, top), k, dim=-1, sorted=False).indices)
    values = pre.gather(-1, indices)
    return Codes(values if signed else values.relu(), indices, pre, top if support > k else None)


class StepFactor(NamedTuple):
    """The learned ``F`` of ``S = I − F``: dense ``full [K, K]``, or ``left @ right.T`` with ``left, right [K, r]``."""

    full: Tensor | None = None
    left: Tensor | None = None
    right: Tensor | None = None

    def times(self, codes: Codes) -> Tensor:
        """``z F`` for sparse ``z``: ``O(B·k·K)`` (full) or ``O(B·k·r + B·r·K)`` (low rank), never ``O(B·K²)``."""
        if self.full is not None:
            return sparse_rows_matmul(codes.values, codes.indices, self.full)
        if self.left is None or self.right is None:
            raise ValueError("StepFactor needs `full` or both `left` and `right`")
        return sparse_rows_matmul(codes.values, codes.indices, self.left) @ self.right.T


def multistep_encode(pre: Tensor, k: int, n_steps: int = 1, step: StepFactor | None = None, *,
                     signed: bool = True, support: int = 0) -> Codes:
    """``z⁽¹⁾ = σ(pre)``, ``z⁽ᵗ⁾ = σ(pre + z⁽ᵗ⁻¹⁾ − z⁽ᵗ⁻¹⁾F)`` for ``t = 2..n_steps`` (Eq. 10); ``σ`` = :func:`select_topk`.

    ``n_steps = 1`` is the one-shot encoder (iSAE). Gradients flow through every step. The returned ``pre`` and
    ``support`` are the last step's (spec §2: AuxK and the aRIP support use them).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if n_steps > 1 and step is None:
        raise ValueError("a multistep encoder (n_steps > 1) needs the step factor F")
    codes = select_topk(pre, k, signed=signed, support=support if n_steps == 1 else 0)
    for t in range(2, n_steps + 1):
        assert step is not None
        last = pre.scatter_add(-1, codes.indices, codes.values.to(pre.dtype)) - step.times(codes)
        codes = select_topk(last, k, signed=signed, support=support if t == n_steps else 0)
    return codes


# ----------------------------------------------------------------------------------------------- initialisation


@torch.no_grad()
def unit_rows(weight: Tensor) -> Tensor:
    """Divide each row by its norm in place (the hard renormalisation of every training forward, spec §1.1)."""
    return weight.div_(weight.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR))


@torch.no_grad()
def gaussian_unit_atoms(d_sae: int, d_in: int, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> Tensor:
    """``W_dec [K, N]`` with rows drawn from N(0, I) and normalised (spec §1.4); ``W_enc = W_decᵀ`` starts tied."""
    return unit_rows(torch.randn(d_sae, d_in, dtype=dtype, device=device))


@torch.no_grad()
def _gram_eigen(decoder: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs of ``W_decᵀW_dec [N, N]`` (float64, descending): the nonzero spectrum of ``DᵀD [K, K]``."""
    evals, evecs = torch.linalg.eigh(decoder.double().T @ decoder.double())
    return evals.flip(0).clamp_min(0.0), evecs.flip(1)


@torch.no_grad()
def ista_step_factor(decoder: Tensor) -> Tensor:
    """Dense ``F₀ = DᵀD / (1.1·λ_max(DᵀD))``, ``[K, K]`` (spec §2; ``DᵀD`` is ``W_dec W_decᵀ`` here)."""
    lam = _gram_eigen(decoder)[0][0]
    return (decoder.double() @ decoder.double().T / (ISTA_MARGIN * lam)).to(decoder.dtype)


@torch.no_grad()
def ista_step_factor_low_rank(decoder: Tensor, rank: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(U, V) [K, r]`` with ``U Vᵀ`` the best rank-``r`` approximation of :func:`ista_step_factor`'s ``F₀``.

    ``F₀ = P diag(σ²) Pᵀ / (1.1σ₁²)`` with ``W_dec = P diag(σ) Qᵀ``; ``U = V = P_r diag(σ_r)/(σ₁√1.1)``, found from
    the ``[N, N]`` eigenproblem (no ``[K, K]`` matrix). ``F₀`` has rank ≤ N: for ``r > N`` the extra columns of ``V``
    are 0 (``U Vᵀ = F₀`` exactly) and those of ``U`` small Gaussian (1/√K), so both still receive gradient.
    """
    evals, evecs = _gram_eigen(decoder)
    used = min(rank, evecs.shape[1])
    sigma = evals[:used].sqrt()
    kept = sigma > sigma[0] * 1e-6
    left_vectors = decoder.double() @ evecs[:, :used] / torch.where(kept, sigma, torch.ones_like(sigma))
    factor = left_vectors * (sigma * kept) / (sigma[0] * ISTA_MARGIN**0.5)
    d_sae = decoder.shape[0]
    left = torch.zeros(d_sae, rank, dtype=torch.float64, device=decoder.device)
    right = torch.zeros_like(left)
    left[:, :used], right[:, :used] = factor, factor
    if rank > used:
        noise = torch.randn(d_sae, rank - used, generator=generator, dtype=torch.float64, device="cpu")
        left[:, used:] = noise.to(decoder.device) / d_sae**0.5
    return left.to(decoder.dtype), right.to(decoder.dtype)


@torch.no_grad()
def geometric_median(points: Tensor, *, max_iter: int = 100, tol: float = 1e-5) -> Tensor:
    """Weiszfeld's algorithm from the mean (spec §1.3: ≤ 100 iterations, tolerance 1e-5), in float64; ``[N]``."""
    data = points.reshape(-1, points.shape[-1]).double()
    median = data.mean(dim=0)
    for _ in range(max_iter):
        weights = 1.0 / (data - median).norm(dim=-1).clamp_min(NORM_FLOOR)
        updated = (weights[:, None] * data).sum(0) / weights.sum()
        done = float((updated - median).norm()) < tol
        median = updated
        if done:
            break
    return median.to(points.dtype)


def batch_variance(x: Tensor) -> Tensor:
    """Per-element variance around the batch mean, ``mean((x − mean_b x)²)`` (σ² of the MSE normaliser, spec §1.6)."""
    flat = x.reshape(-1, x.shape[-1])
    return (flat - flat.mean(dim=0, keepdim=True)).pow(2).mean()


# ----------------------------------------------------------------------------------------------- training loss


@dataclass(frozen=True)
class ISAEHyperparameters:
    """What distinguishes the rungs (spec §3): TopK = (signed False, rip 0, l1 0, T 1); AbsTopK = signed, rip 0, l1 0;
    iSAE = signed, rip 0.1 (+ L1 0.01 in the authors' code); iSAE-ME = iSAE with ``n_steps = 5``."""

    k: int
    n_steps: int = 1
    signed: bool = True
    arip_coefficient: float = 0.1
    l1_coefficient: float = 0.01
    aux_coefficient: float = 1.0 / 32
    aux_k: int | None = None
    """Dead latents used by AuxK; ``None`` = ``N // 2`` (spec §1.5)."""
    support_multiplier: int = 2
    """The aRIP support is the top ``support_multiplier·k`` (last-step) pre-activations (spec §4)."""


class ISAEParameters(NamedTuple):
    """The tensors of one iSAE, SAELens layout (``W_enc [N, K]``, ``W_dec [K, N]``, ``b [N]``)."""

    W_enc: Tensor
    W_dec: Tensor
    b: Tensor
    step: StepFactor | None = None


class ISAEForward(NamedTuple):
    """One training forward on normalised inputs: codes, reconstruction ``x̂_n``, total loss and its terms."""

    codes: Codes
    reconstruction: Tensor
    loss: Tensor
    losses: dict[str, Tensor]


def encode_normalised(x_n: Tensor, params: ISAEParameters, hp: ISAEHyperparameters, support: int = 0) -> Codes:
    """Codes of normalised inputs: ``pre = (x_n − b)W_enc`` then :func:`multistep_encode`."""
    pre = (x_n - params.b) @ params.W_enc
    return multistep_encode(pre, hp.k, hp.n_steps, params.step, signed=hp.signed, support=support)


def auxk_loss(codes: Codes, residual: Tensor, decoder: Tensor, dead: Tensor, k_aux: int, *, signed: bool = True) -> Tensor:
    """AuxK (spec §1.5): the ``k_aux`` largest dead (last-step) pre-activations reconstruct the detached residual;
    the MSE is divided by that residual's per-element batch variance. 0 when no latent is dead."""
    n_dead = int(dead.sum())
    if n_dead == 0 or k_aux < 1:
        return codes.pre.new_zeros(())
    with torch.no_grad():
        score = torch.where(dead, codes.pre.abs() if signed else codes.pre, torch.full_like(codes.pre, -torch.inf))
        indices = torch.topk(score, min(k_aux, n_dead), dim=-1, sorted=False).indices
    values = codes.pre.gather(-1, indices)
    recon = sparse_rows_matmul(values if signed else values.relu(), indices, decoder)
    target = residual.detach()
    return (recon - target).pow(2).mean() / batch_variance(target).clamp_min(torch.finfo(target.dtype).tiny)


def isae_forward(x_n: Tensor, params: ISAEParameters, hp: ISAEHyperparameters, *, mse_variance: Tensor | float,
                 dead: Tensor | None = None, probe_seed: int = 0, step: int = 0) -> ISAEForward:
    """The full training forward of spec's Summary on already-normalised ``x_n [B, N]``.

    ``mse_variance``: σ² (per-element variance of the first training batch). ``dead [K]`` (bool): latents that did not
    fire in the dead window, for AuxK. The aRIP probe is drawn from ``(probe_seed, step)``, so a step is reproducible.
    """
    support = hp.support_multiplier * hp.k if hp.arip_coefficient > 0 else 0
    codes = encode_normalised(x_n, params, hp, support=min(support, params.W_dec.shape[0]))
    recon = sparse_rows_matmul(codes.values, codes.indices, params.W_dec) + params.b
    losses = {"mse_loss": (recon - x_n).pow(2).mean() / mse_variance}
    if hp.arip_coefficient > 0:
        assert codes.support is not None
        generator = probe_generator(x_n.device, probe_seed * PROBE_SEED_STRIDE + step)
        losses["arip_loss"] = hp.arip_coefficient * arip_estimate(params.W_dec, codes.support, generator=generator)
    if hp.aux_coefficient > 0 and dead is not None:
        k_aux = hp.aux_k if hp.aux_k is not None else x_n.shape[-1] // 2
        aux = auxk_loss(codes, x_n - recon, params.W_dec, dead, k_aux, signed=hp.signed)
        losses["auxiliary_reconstruction_loss"] = hp.aux_coefficient * aux
    if hp.l1_coefficient > 0:
        losses["l1_loss"] = hp.l1_coefficient * codes.values.abs().sum() / (codes.values.shape[0] * hp.k)
    loss = sum(losses.values(), x_n.new_zeros(()))
    return ISAEForward(codes, recon, loss, losses)
