"""MetaSAE joint training (Levinson, arXiv 2604.03436): framework-free math in plain torch.

Spec: ``shared/papers/metasae.md``. A small BatchTopK *meta SAE* sparsely rebuilds the primary's unit-norm
decoder rows; the primary pays ``λ2 · mean_i p_i`` wherever a row is easy to rebuild (§2.1)::

    w_i = W_dec[i] / ||W_dec[i]||                 (unit rows; the paper's rows are unit by constraint)
    ŵ_i = meta(w)_i                               (no autograd, whole decoder as one batch: a constant target)
    p_i = exp(−Σ_d (w_i,d − ŵ_i,d)² / σ²)         (squared error SUMMED over d, in row space)

Unit-normalising inside the penalty keeps it invariant to the row norms (which SAELens's TopK family leaves free
and rescales by), so it cannot be escaped through the norm (§7.3 item 5); at unit rows it is the paper's formula
and its gradient is the paper's gradient after its tangential projection.

The adapters add ``λ2 · s · mean_i p_i`` with ``s = loss_scale(batch)``: the paper weighs the penalty against a
per-element MSE on standardised tokens, SAELens and dictionary_learning sum the squared error over ``d`` in the
input's units, and ``s`` converts one into the other (:func:`loss_scale`), so λ2 keeps the paper's meaning.

The meta SAE trains in alternation (§2.3): ``n_p`` primary steps, then ``n_m`` meta steps on the detached decoder
as one batch, with its own Adam. :class:`MetaCritic` bundles the meta SAE, that Adam (state in buffers, so a
``state_dict`` round-trips it) and the schedule counter; adapters call :meth:`MetaCritic.before_primary_step`
and :meth:`MetaCritic.penalty` once per primary step. The meta SAE's parameters never get a ``.grad`` (its step
uses ``torch.autograd.grad``), so a primary optimiser that holds them never moves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.adam import adam as functional_adam

from sae_aligned_plugin.core.sparse_codes import SparseCodes, batch_topk, decode, encode_values
from sae_aligned_plugin.validation import ConfigError

META_SIZE_FRACTION = 1800 / 20480
"""The paper's meta size m = 1,800 for n = 20,480 primary latents (≈ 8.8 %, §1.2)."""
STD_EPS = 1e-5
"""Per-row standardisation ``(x − mean)/(std + 1e-5)`` (§1.2; the authors' ``input_unit_norm``)."""


def default_meta_size(n_latents: int) -> int:
    """``round(0.0879 · n)`` (at least 1): the paper's meta/primary size ratio (§1.2)."""
    return max(1, round(META_SIZE_FRACTION * n_latents))


@dataclass(frozen=True)
class MetaSAEConfig:
    """Everything the joint method adds to a primary SAE with ``n_latents`` decoder rows of width ``d_in``.

    Defaults are the paper's selected configuration (Summary, §2.3): meta size ≈ 9 % of ``n_latents``
    (``meta_d_sae=None``), meta k = 8, λ2 = 0.3, σ² = 1, n_p = 10 / n_m = 5, meta Adam lr 3e-4 with betas
    (0.9, 0.99), meta AuxK top-512 at weight 1/32, dead after 5 inactive meta steps. The adapters expose the same
    field names (:data:`METASAE_FIELDS`). Raises :class:`~sae_aligned_plugin.validation.ConfigError` for impossible
    values.
    """

    n_latents: int
    d_in: int
    meta_d_sae: int | None = None
    meta_k: float = 8.0
    lambda2: float = 0.3
    sigma_sq: float = 1.0
    n_primary_steps: int = 10
    n_meta_steps: int = 5
    meta_lr: float = 3e-4
    meta_adam_beta1: float = 0.9
    meta_adam_beta2: float = 0.99
    meta_aux_k: int = 512
    meta_aux_coefficient: float = 1 / 32
    meta_dead_after: int = 5
    meta_threshold_lr: float = 0.01
    meta_seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"MetaSAE: {message}")

        need(self.n_latents > 0 and self.d_in > 0, f"d_sae and d_in must be positive, got {self.n_latents}, {self.d_in}")
        if self.meta_d_sae is None:
            object.__setattr__(self, "meta_d_sae", default_meta_size(self.n_latents))
        size = self.meta_d_sae
        need(0 < size < self.n_latents,
             f"the meta size must satisfy 0 < meta_d_sae < d_sae (={self.n_latents}), got {size}; the paper uses "
             f"about 9 % of d_sae ({default_meta_size(self.n_latents)} here)")
        need(0 < self.meta_k <= size, f"meta_k must satisfy 0 < meta_k <= meta_d_sae (={size}), got {self.meta_k}")
        need(self.sigma_sq > 0 and math.isfinite(self.sigma_sq),
             f"sigma_sq (the penalty bandwidth σ²) must be positive and finite, got {self.sigma_sq}")
        need(self.lambda2 >= 0 and math.isfinite(self.lambda2), f"lambda2 must be >= 0 and finite, got {self.lambda2}")
        need(self.n_primary_steps >= 1 and self.n_meta_steps >= 0,
             f"need n_primary_steps >= 1 and n_meta_steps >= 0, got {self.n_primary_steps}, {self.n_meta_steps}")
        need(self.meta_lr >= 0 and 0 <= self.meta_adam_beta1 < 1 and 0 <= self.meta_adam_beta2 < 1,
             f"the meta Adam needs meta_lr >= 0 and betas in [0, 1), got {self.meta_lr}, "
             f"({self.meta_adam_beta1}, {self.meta_adam_beta2})")
        need(self.meta_aux_k >= 1 and self.meta_aux_coefficient >= 0 and self.meta_dead_after >= 1,
             f"need meta_aux_k >= 1, meta_aux_coefficient >= 0 and meta_dead_after >= 1, got {self.meta_aux_k}, "
             f"{self.meta_aux_coefficient}, {self.meta_dead_after}")
        need(0 < self.meta_threshold_lr <= 1, f"meta_threshold_lr must be in (0, 1], got {self.meta_threshold_lr}")


METASAE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(MetaSAEConfig) if f.name not in ("n_latents", "d_in"))
"""The MetaSAE hyperparameters, with the same names in the SAELens configs and dictionary_learning trainers."""


def unit_rows(decoder: Tensor) -> Tensor:
    """``W_dec[i] / ||W_dec[i]||`` (differentiable; zero rows stay zero)."""
    return decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def row_mean_std(rows: Tensor, scale: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-row mean and unbiased std of ``u = scale · rows`` over the last dimension, ``[..., 1]`` each, from one
    pass of sums: ``var = (Σu² − d·mean²)/(d − 1)``. That loses precision only when ``|mean| ≫ std``, which unit
    decoder rows never have (``d·mean² ≤ ‖u‖² = 1``, equal only for a constant row)."""
    d = rows.shape[-1]
    mean = rows.sum(dim=-1, keepdim=True).mul_(scale / d)
    square_sum = torch.linalg.vector_norm(rows, dim=-1, keepdim=True).mul_(scale).square_()
    return mean, square_sum.sub_(d * mean.square()).clamp_min_(0).div_(d - 1).sqrt_()


def standardise_rows(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(x − mean_d x)/(std_d x + 1e-5)`` per row (unbiased std), with the mean and std to map back (§1.1)."""
    mean, std = row_mean_std(rows)
    return (rows - mean).div_(std + STD_EPS), mean, std


def loss_scale(x: Tensor) -> Tensor:
    """``d · mean_b var_d(x_b)`` (unbiased variance over ``d``, detached): the factor between a squared error summed
    over ``d`` in the input's units and the paper's per-element error on standardised tokens (§1.1, §3.4).

    The paper standardises each token, ``x̃ = (x − mean_d x)/std_d x``, and averages the squared error over ``d``;
    SAELens and dictionary_learning sum it over ``d`` on the raw input, ``Σ_d e² = std² · d · mean_d ẽ²``.
    Multiplying the penalty by this factor gives λ2 the paper's weight against the reconstruction loss at any
    activation scale (SAELens's ``√d``-normalised inputs: ≈ d; dictionary_learning's unit-norm inputs: ≈ 1).
    """
    x = x.detach().float()
    d = x.shape[-1]
    centred_norm = torch.linalg.vector_norm(x - x.mean(dim=-1, keepdim=True), dim=-1)  # ten times faster than var
    return centred_norm.square_().mean() * (d / (d - 1))


def decomposability_penalty(rows: Tensor, target: Tensor, sigma_sq: float) -> tuple[Tensor, Tensor]:
    """``(p, e)`` per row: ``e_i = Σ_d (rows_i,d − target_i,d)²`` and ``p_i = exp(−e_i/σ²) ∈ (0, 1]`` (§2.1).

    The gradient of ``mean_i p_i`` w.r.t. ``rows[i]`` is ``−(2 p_i/(n σ²))·(rows_i − target_i)``: it pushes each
    row away from its (constant) meta reconstruction.
    """
    sq_error = (rows - target).pow(2).sum(dim=-1)
    return torch.exp(-sq_error / sigma_sq), sq_error


class _MeanSquare(torch.autograd.Function):
    """``mean(r²)`` with the gradient ``2r/N``: one fused norm forward, one scaled copy backward (``F.mse_loss`` makes
    about five passes over ``[B, d]`` on CPUs)."""

    @staticmethod
    def forward(ctx: Any, residual: Tensor) -> Tensor:
        ctx.save_for_backward(residual)
        return torch.linalg.vector_norm(residual).square_() / residual.numel()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (residual,) = ctx.saved_tensors
        return residual * (2.0 * grad / residual.numel())


class MetaForward(NamedTuple):
    """One meta forward pass on standardised rows ``x``: the kept BatchTopK codes and the reconstruction."""

    x: Tensor
    codes: SparseCodes
    recon: Tensor


class MetaSAE(nn.Module):
    """BatchTopK SAE over decoder rows (§1.2): ``a = relu((x̃ − b_dec) W_enc)``, top ``k·B`` kept, ``x̂̃ = z W_dec + b_dec``.

    ``x̃`` is each row standardised over its ``d_in`` entries; :meth:`forward` maps the output back to the row's
    scale. No encoder bias (the authors' ``b_enc`` is unused). Init: Kaiming-uniform ``W_enc``, ``W_dec = W_encᵀ``
    with unit rows, ``b_dec = 0``, from a private generator seeded with ``seed`` (the caller's RNG does not move).
    Buffers: ``steps_inactive`` (consecutive meta steps without firing, int64) and ``threshold`` (EMA of the
    smallest kept code, used by the JumpReLU export; −1 until the first meta step).
    """

    def __init__(self, d_in: int, d_sae: int, k: float, *, aux_k: int = 512, aux_coefficient: float = 1 / 32,
                 dead_after: int = 5, threshold_lr: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.aux_k, self.aux_coefficient, self.dead_after, self.threshold_lr = aux_k, aux_coefficient, dead_after, threshold_lr
        generator = torch.Generator().manual_seed(seed)
        w_enc = nn.init.kaiming_uniform_(torch.empty(d_in, d_sae), generator=generator)
        self.W_enc = nn.Parameter(w_enc)
        self.W_dec = nn.Parameter(unit_rows(w_enc.T.contiguous()))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("steps_inactive", torch.zeros(d_sae, dtype=torch.int64))
        self.register_buffer("threshold", torch.tensor(-1.0))

    @classmethod
    def from_config(cls, config: MetaSAEConfig) -> "MetaSAE":
        return cls(config.d_in, int(config.meta_d_sae), config.meta_k,  # type: ignore[arg-type]
                   aux_k=config.meta_aux_k, aux_coefficient=config.meta_aux_coefficient,
                   dead_after=config.meta_dead_after, threshold_lr=config.meta_threshold_lr, seed=config.meta_seed)

    def encode_standardised(self, x: Tensor) -> MetaForward:
        """Codes and reconstruction of standardised rows, differentiable w.r.t. the meta's parameters.

        The dense ``(x − b_dec) W_enc`` (computed as ``x W_enc − b_dec W_enc``) only selects the kept codes; their
        values, the decoder and all gradients go through :mod:`~sae_aligned_plugin.core.sparse_codes`.
        """
        with torch.no_grad():
            pre = (x @ self.W_enc).sub_(self.b_dec @ self.W_enc)
        codes = batch_topk(pre, self.k)
        values = encode_values(self.W_enc, self.b_dec, x, codes)
        return MetaForward(x, codes, decode(values, self.W_dec, codes, self.b_dec))

    @torch.no_grad()
    def forward(self, rows: Tensor, scale: Tensor | float = 1.0) -> Tensor:
        """Reconstruction ``ŵ = x̂̃·std + mean`` of the rows ``u = scale · rows`` in row space, without autograd (the
        critic's use; ``scale`` [B, 1] lets the penalty pass raw decoder rows and their inverse norms).

        Fused: ``x̃ W_enc = (scale·rows W_enc − mean ⊗ 1ᵀW_enc)/(std + ε)`` never materialises ``u`` or ``x̃``, the
        per-row ``std`` rides on the decoded codes' weights and ``b_dec·std + mean`` is one rank-2 update, so besides
        the matmul and the top-k it reads ``rows`` twice and writes the ``[B, d]`` output once.
        """
        mean, std = row_mean_std(rows, scale)
        inverse = (std + STD_EPS).reciprocal_()
        pre = (rows @ self.W_enc).mul_(inverse * scale)
        pre.addmm_(torch.cat([mean * inverse, torch.ones_like(mean)], dim=1),
                   torch.stack([self.W_enc.sum(dim=0), self.b_dec @ self.W_enc]), alpha=-1.0)
        codes = batch_topk(pre, self.k)
        out = decode(codes.values * std.view(-1)[codes.rows], self.W_dec, codes)
        return out.addmm_(torch.cat([std, mean], dim=1), torch.stack([self.b_dec, torch.ones_like(self.b_dec)]))

    def dead_mask(self) -> Tensor:
        return self.steps_inactive >= self.dead_after

    def loss(self, out: MetaForward) -> tuple[Tensor, Tensor, Tensor]:
        """``(total, mse, aux)``: ``mse = mean_{i,d}(x̂̃ − x̃)²`` plus AuxK on dead latents (§1.2).

        AuxK: the top ``min(aux_k, #dead)`` ReLU pre-activations of dead latents per row rebuild the residual
        ``x̃ − x̂̃`` (not detached, as written in the spec), ``aux = aux_coefficient · mean(...)²``. With
        ``aux_k >= #dead`` (always, at the paper's meta size 1,800 < 512·4) that is every dead latent, without a top-k.
        """
        residual = out.recon - out.x
        mse = _MeanSquare.apply(residual)
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0:
            return mse, mse, mse.new_zeros(())
        dead_pre = F.relu(out.x @ self.W_enc[:, dead] - self.b_dec @ self.W_enc[:, dead])
        aux_acts = dead_pre
        if self.aux_k < n_dead:
            top = dead_pre.topk(self.aux_k, dim=-1, sorted=False)
            aux_acts = torch.zeros_like(dead_pre).scatter_(-1, top.indices, top.values)
        aux = self.aux_coefficient * (aux_acts @ self.W_dec[dead] + residual).pow(2).mean()
        return mse + aux, mse, aux

    @torch.no_grad()
    def record_firing(self, codes: SparseCodes) -> None:
        """Update the inactivity counters and the export threshold after a meta training step."""
        positive = codes.values > 0
        fired = torch.bincount(codes.cols[positive], minlength=self.d_sae) > 0
        self.steps_inactive.add_(1).masked_fill_(fired, 0)
        if bool(positive.any()):
            smallest = codes.values[positive].min().to(self.threshold.dtype)
            rate = 1.0 if float(self.threshold) < 0 else self.threshold_lr
            self.threshold.lerp_(smallest, rate)


class MetaAdam(nn.Module):
    """Adam for the meta SAE (§2.3: its own optimiser), with its state as buffers so checkpoints carry it.

    Uses ``torch.optim.adam.adam`` (PyTorch's own update); ``exp_avg_<name>``/``exp_avg_sq_<name>`` per parameter
    and an int64 ``step`` counter.
    """

    def __init__(self, params: dict[str, nn.Parameter], lr: float, betas: tuple[float, float]) -> None:
        super().__init__()
        self.names = list(params)
        self.lr, self.betas = lr, betas
        for name, param in params.items():
            self.register_buffer(f"exp_avg_{name}", torch.zeros_like(param.detach()))
            self.register_buffer(f"exp_avg_sq_{name}", torch.zeros_like(param.detach()))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, params: list[Tensor], grads: list[Tensor]) -> None:
        """One Adam update of ``params`` (in ``self.names`` order) with ``grads``."""
        steps = [torch.tensor(float(self.step)) for _ in params]  # incremented in place by the update
        functional_adam(
            params, grads, [getattr(self, f"exp_avg_{n}") for n in self.names],
            [getattr(self, f"exp_avg_sq_{n}") for n in self.names], [], steps,
            amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr, weight_decay=0.0, eps=1e-8,
            maximize=False,
        )
        self.step.add_(1)


class _RowPenalty(torch.autograd.Function):
    """``(p, e)`` per row for ``u = unit_rows(decoder)`` and the constant target ``ŵ = meta(u)`` (§2.1), in fp32 or
    the decoder's precision if higher.

    Hand-written backward (the gradient flows through ``p`` only): with ``c_i = (2/σ²)·∂L/∂p_i·p_i``, the offset
    ``o_i = ŵ_i − u_i`` and ``r_i = ||W_dec[i]||``, ``∂L/∂u_i = c_i o_i`` and, through the unit-norm map's Jacobian
    ``(I − u uᵀ)/r``, ``∂L/∂W_dec[i] = (c_i/r_i)·o_i − (c_i ⟨o_i, W_dec[i]⟩/r_i³)·W_dec[i]``. It equals autograd
    through :func:`unit_rows` and :func:`decomposability_penalty`; ``u`` is never materialised.
    """

    @staticmethod
    def forward(ctx: Any, decoder: Tensor, meta: MetaSAE, sigma_sq: float) -> tuple[Tensor, Tensor]:
        work = decoder.to(torch.promote_types(decoder.dtype, torch.float32))      # at least fp32
        inverse_norm = torch.linalg.vector_norm(work, dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()
        meta_dtype = meta.W_dec.dtype
        offset = meta(work.to(meta_dtype), inverse_norm.to(meta_dtype)).to(work.dtype)
        offset.addcmul_(work, inverse_norm, value=-1.0)                            # ŵ − u
        sq_error = torch.linalg.vector_norm(offset, dim=-1).square_()
        p = torch.exp(-sq_error / sigma_sq)
        ctx.save_for_backward(work, offset, inverse_norm, p, torch.linalg.vecdot(offset, work))
        ctx.sigma_sq, ctx.dtype = sigma_sq, decoder.dtype
        ctx.mark_non_differentiable(sq_error)
        return p, sq_error

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_p: Tensor, _: Tensor) -> tuple[Tensor, None, None]:
        work, offset, inverse_norm, p, dot = ctx.saved_tensors
        c = ((2.0 / ctx.sigma_sq) * grad_p * p).unsqueeze(-1) * inverse_norm       # c_i / r_i
        grad = offset * c
        return grad.addcmul_(work, c * dot.unsqueeze(-1) * inverse_norm.square(), value=-1.0).to(ctx.dtype), None, None


class PenaltyTerms(NamedTuple):
    """``loss = λ2 · mean_i p_i`` (differentiable w.r.t. the decoder only) and detached diagnostics."""

    loss: Tensor
    mean_p: Tensor
    mean_sq_error: Tensor


class MetaStepStats(NamedTuple):
    """Diagnostics of the last meta step (detached)."""

    loss: Tensor
    mse: Tensor
    aux: Tensor


class MetaCritic(nn.Module):
    """The meta SAE, its Adam and the alternating schedule, for one primary decoder ``[n_latents, d_in]``.

    Per primary step: :meth:`before_primary_step` (runs ``n_m`` meta steps when ``n_p`` primary steps have passed
    since the last meta phase, primary first: P×n_p, M×n_m, P×n_p, ...), then :meth:`penalty` in the primary loss.
    ``primary_step`` and ``meta_step`` are int64 buffers. ``sae``: an existing :class:`MetaSAE` to train (e.g. one
    a dictionary owns); by default one is built from ``config``.
    """

    def __init__(self, config: MetaSAEConfig, sae: MetaSAE | None = None) -> None:
        super().__init__()
        self.config = config
        self.sae = sae if sae is not None else MetaSAE.from_config(config)
        self.optimizer = MetaAdam(dict(self.sae.named_parameters()), config.meta_lr,
                                  (config.meta_adam_beta1, config.meta_adam_beta2))
        self.register_buffer("primary_step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("meta_step", torch.zeros((), dtype=torch.int64))
        self.last_meta: MetaStepStats | None = None
        self.last_penalty: PenaltyTerms | None = None

    def meta_steps_due(self, primary_step: int) -> int:
        """Meta steps to run before 0-based primary step ``t``: ``n_m`` if ``t > 0`` and ``t % n_p == 0``, else 0."""
        n_p, n_m = self.config.n_primary_steps, self.config.n_meta_steps
        return n_m if primary_step > 0 and primary_step % n_p == 0 else 0

    def before_primary_step(self, decoder: Tensor) -> int:
        """Run the meta phase if it is due, then count one primary step; returns the meta steps run."""
        due = self.meta_steps_due(int(self.primary_step))
        if due:
            self.meta_train_step(decoder, due)
        self.primary_step.add_(1)
        return due

    def meta_train_step(self, decoder: Tensor, steps: int = 1) -> MetaStepStats:
        """``steps`` meta steps on ``unit_rows(decoder).detach()`` as one batch (standardised once: the decoder
        does not change during a meta phase). Each: loss, decoder-gradient projection and renormalisation of the
        meta's rows, Adam (§1.1 constraint, §2.3). Only the meta SAE changes."""
        x = standardise_rows(unit_rows(decoder.detach()).to(self.sae.W_dec.dtype))[0]
        for _ in range(steps):
            self.last_meta = self._meta_step(x)
        assert self.last_meta is not None
        return self.last_meta

    def _meta_step(self, x: Tensor) -> MetaStepStats:
        sae = self.sae
        params = [getattr(sae, name) for name in self.optimizer.names]
        with torch.enable_grad():
            out = sae.encode_standardised(x)
            loss, mse, aux = sae.loss(out)
            grads = list(torch.autograd.grad(loss, params))
        with torch.no_grad():
            i = self.optimizer.names.index("W_dec")
            direction = unit_rows(sae.W_dec)
            grads[i] = grads[i] - (grads[i] * direction).sum(-1, keepdim=True) * direction
            sae.W_dec.copy_(direction)
            self.optimizer.update(params, grads)
            sae.record_firing(out.codes)
        self.meta_step.add_(1)
        return MetaStepStats(loss.detach(), mse.detach(), aux.detach())

    def penalty(self, decoder: Tensor, scale: Tensor | float = 1.0) -> PenaltyTerms:
        """``λ2 · scale · mean_i p_i`` on the unit rows of ``decoder`` (§2.1), in ≥ fp32; the meta is a frozen critic:
        ``Ŵ`` is computed without autograd from the rows, so the gradient reaches ``decoder`` only.
        ``scale``: :func:`loss_scale` of the batch, so λ2 weighs the penalty as in the paper's loss."""
        p, sq_error = _RowPenalty.apply(decoder, self.sae, self.config.sigma_sq)
        mean_p = p.mean()
        loss = self.config.lambda2 * scale * mean_p
        self.last_penalty = PenaltyTerms(loss, mean_p.detach(), sq_error.mean().detach())
        return self.last_penalty

    @torch.no_grad()
    def metrics(self) -> dict[str, Tensor]:
        """Scalars for logging: mean penalty ``p``, its squared error, the last meta loss terms, meta dead fraction."""
        out = {"metasae/meta_dead_fraction": self.sae.dead_mask().float().mean(),
               "metasae/meta_steps": self.meta_step.clone()}
        if self.last_penalty is not None:
            out["metasae/mean_p"] = self.last_penalty.mean_p
            out["metasae/row_sq_error"] = self.last_penalty.mean_sq_error
        if self.last_meta is not None:
            out["metasae/meta_mse"] = self.last_meta.mse
            out["metasae/meta_aux_loss"] = self.last_meta.aux
        return out
