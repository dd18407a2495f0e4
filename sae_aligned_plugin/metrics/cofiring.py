"""Within-SAE co-firing: mean |φ| over all latent pairs (MetaSAE spec ``shared/papers/metasae.md`` §3.1).

For binary firing indicators ``z_ti`` over ``n`` tokens, with ``N_i = Σ_t z_ti`` and ``N_ij = Σ_t z_ti z_tj``::

    φ_ij = (n·N_ij − N_i·N_j) / sqrt(N_i (n − N_i) N_j (n − N_j)),      φ_ij := 0 when the denominator is 0

(a latent that never fires, or always fires, has φ = 0 with everything). The headline is the mean of ``|φ_ij|``
over all ``F(F−1)/2`` pairs ``i < j`` of one SAE. Latent ``i`` fires on token ``t`` when its value exceeds
``θ_i`` (``thresholds``), or by default when its code is nonzero (``|z| > 0``: the same as ``> 0`` for non-negative
codes, and right for signed AbsTopK codes). Pass codes (``sae.encode``), or pre-activations with per-latent
thresholds (the paper's EER thresholds, §3.5).

Counts are exact and never pass through half precision (§7.2 "fp16 counts"): each token chunk's ``ZᵀZ`` is added
into an int64 ``F × F`` matrix. On the CPU it is a scipy sparse int64 product (cost ∝ tokens · L0², not
tokens · F²); on an accelerator a float32 product of 0/1 matrices, exact while a chunk has fewer than 2²⁴ tokens.
Memory: the int64 matrix is ``8·F²`` bytes (134 MB at F = 4096, 3.4 GB at F = 20480) plus a float32 ``F × F``
product per chunk; φ is evaluated in float64 on ``block_rows × F`` blocks. Compare SAEs only on the same tokens:
under independence ``E|φ| ≈ sqrt(2/(π n))`` (§7.2 "noise floor").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import scipy.sparse
import torch
from numpy.typing import NDArray
from torch import Tensor

from sae_aligned_plugin.metrics._arrays import frozen_array

EXACT_CHUNK_LIMIT = 2**24
"""Largest token chunk whose float32 ``ZᵀZ`` counts are exact."""


@dataclass(frozen=True, eq=False)
class CofiringReport:
    """Mean |φ| over all pairs of one SAE, with the exact counts it came from (read-only arrays).

    ``firing_counts[i] = N_i``; ``joint_counts[i, j] = N_ij`` (symmetric, diagonal = ``N_i``);
    ``latent_mean_abs_phi[i]`` = mean of ``|φ_ij|`` over ``j ≠ i`` (for per-latent statistics or a bootstrap over
    latents, which unlike the pairs are roughly independent).
    """

    n_tokens: int
    mean_abs_phi: float
    mean_phi: float
    firing_counts: NDArray[np.int64]
    joint_counts: NDArray[np.int64]
    latent_mean_abs_phi: NDArray[np.float64]

    @property
    def d_sae(self) -> int:
        return int(self.firing_counts.size)

    @property
    def n_pairs(self) -> int:
        return self.d_sae * (self.d_sae - 1) // 2

    @property
    def n_constant(self) -> int:
        """Latents with φ ≡ 0: never fired, or fired on every token."""
        return int(np.count_nonzero((self.firing_counts == 0) | (self.firing_counts == self.n_tokens)))

    @property
    def mean_abs_phi_live(self) -> float:
        """Mean |φ| over the pairs of non-constant latents only (0 if fewer than two). The all-pairs mean counts a
        0 for every pair with a dead latent, so it shrinks like ``(1 − dead fraction)²``; compare SAEs with
        different dead fractions on this one."""
        live = self.d_sae - self.n_constant
        live_pairs = live * (live - 1) // 2
        return self.mean_abs_phi * self.n_pairs / live_pairs if live_pairs else 0.0

    def summary(self) -> dict[str, float]:
        """Floats only: ``n_tokens``, ``d_sae``, ``n_pairs``, ``n_constant``, ``mean_abs_phi``,
        ``mean_abs_phi_live``, ``mean_phi``, ``mean_l0`` and ``noise_floor`` = ``sqrt(2/(π n))``, the expected |φ| of
        independent latents."""
        return {
            "n_tokens": float(self.n_tokens),
            "d_sae": float(self.d_sae),
            "n_pairs": float(self.n_pairs),
            "n_constant": float(self.n_constant),
            "mean_abs_phi": self.mean_abs_phi,
            "mean_abs_phi_live": self.mean_abs_phi_live,
            "mean_phi": self.mean_phi,
            "mean_l0": float(self.firing_counts.sum() / self.n_tokens),
            "noise_floor": float(np.sqrt(2 / (np.pi * self.n_tokens))),
        }


class CofiringCounter:
    """Streams firing indicators into exact int64 counts ``N_i`` and ``N_ij``; :meth:`report` gives mean |φ|."""

    def __init__(self, d_sae: int, *, thresholds: Tensor | None = None, chunk_size: int = 8192,
                 device: str | torch.device = "cpu") -> None:
        if not 0 < chunk_size < EXACT_CHUNK_LIMIT:
            raise ValueError(f"chunk_size must be in [1, {EXACT_CHUNK_LIMIT}) for exact float32 counts, got {chunk_size}")
        if thresholds is not None and thresholds.shape != (d_sae,):
            raise ValueError(f"thresholds must have shape ({d_sae},), got {tuple(thresholds.shape)}")
        self.d_sae, self.chunk_size, self.device = d_sae, chunk_size, torch.device(device)
        self.thresholds = None if thresholds is None else thresholds.detach().to(self.device)
        self.n_tokens = 0
        self.counts = torch.zeros(d_sae, dtype=torch.int64, device=self.device)
        self.joint = torch.zeros(d_sae, d_sae, dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def update(self, values: Tensor) -> None:
        """Count one batch of values ``[..., F]`` (leading dimensions are tokens); fires iff ``value > θ_i``."""
        if values.shape[-1] != self.d_sae:
            raise ValueError(f"co-firing: values have {values.shape[-1]} latents, expected {self.d_sae}")
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"co-firing: non-finite values in a batch of shape {tuple(values.shape)}")
        values = values.reshape(-1, self.d_sae).to(self.device)
        for chunk in values.split(self.chunk_size):
            fired = chunk != 0 if self.thresholds is None else chunk > self.thresholds
            self.joint += _cooccurrence(fired)
            self.counts += fired.sum(dim=0, dtype=torch.int64)
            self.n_tokens += chunk.shape[0]

    @torch.no_grad()
    def report(self, *, block_rows: int = 1024) -> CofiringReport:
        """:class:`CofiringReport` from the counts so far (φ in float64, ``block_rows`` rows of the matrix at a time)."""
        if self.n_tokens == 0:
            raise ValueError("co-firing: no tokens were counted")
        n = float(self.n_tokens)
        marginal = self.counts.double()
        spread = marginal * (n - marginal)
        abs_sum = phi_sum = 0.0
        per_latent = torch.zeros(self.d_sae, dtype=torch.float64, device=self.device)
        for start in range(0, self.d_sae, block_rows):
            rows = slice(start, min(start + block_rows, self.d_sae))
            phi = phi_from_counts(self.joint[rows].double(), marginal[rows], marginal, n, spread[rows], spread)
            phi[:, rows].fill_diagonal_(0.0)
            per_latent[rows] = phi.abs().sum(dim=1)
            upper = torch.ones_like(phi, dtype=torch.bool).triu_(diagonal=start + 1)
            abs_sum += float(phi.abs()[upper].sum())
            phi_sum += float(phi[upper].sum())
        pairs = max(self.d_sae * (self.d_sae - 1) // 2, 1)
        return CofiringReport(
            n_tokens=self.n_tokens, mean_abs_phi=abs_sum / pairs, mean_phi=phi_sum / pairs,
            firing_counts=frozen_array(self.counts, dtype=np.int64),
            joint_counts=_frozen_matrix(self.joint),
            latent_mean_abs_phi=frozen_array(per_latent / max(self.d_sae - 1, 1)),
        )


def _cooccurrence(fired: Tensor) -> Tensor:
    """``ZᵀZ`` (int64 ``[F, F]``) of a boolean ``[T, F]`` chunk, exactly."""
    if fired.device.type == "cpu":
        z = scipy.sparse.csr_matrix(fired.numpy(), dtype=np.int64)
        return torch.from_numpy((z.T.tocsr() @ z).toarray())
    z = fired.float()
    with torch.autocast(fired.device.type, enabled=False):
        return (z.T @ z).round_().to(torch.int64)


def phi_from_counts(joint: Tensor, counts_i: Tensor, counts_j: Tensor, n: float, spread_i: Tensor | None = None,
                    spread_j: Tensor | None = None) -> Tensor:
    """φ for a block: ``joint [I, J] = N_ij``, marginals ``N_i [I]`` and ``N_j [J]``; 0 where the denominator is 0.

    ``spread = N (n − N)`` may be passed precomputed. Computed in the dtype of ``joint`` (use float64).
    """
    spread_i = counts_i * (n - counts_i) if spread_i is None else spread_i
    spread_j = counts_j * (n - counts_j) if spread_j is None else spread_j
    denominator = (spread_i[:, None] * spread_j[None, :]).sqrt()
    numerator = n * joint - counts_i[:, None] * counts_j[None, :]
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), torch.zeros_like(numerator))


def _frozen_matrix(matrix: Tensor) -> NDArray[np.int64]:
    out = matrix.cpu().numpy().copy()
    out.setflags(write=False)
    return out


@torch.no_grad()
def cofiring(encode: Callable[[Tensor], Tensor], batches: Iterable[Tensor], *, thresholds: Tensor | None = None,
             d_sae: int | None = None, chunk_size: int = 8192, device: str | torch.device | None = None) -> CofiringReport:
    """Mean |φ| of the latents of ``encode`` (e.g. ``sae.encode``, or a function returning pre-activations when
    ``thresholds`` are given) over every token of ``batches``. Counts live on ``device`` (default: the codes')."""
    counter: CofiringCounter | None = None
    for batch in batches:
        values = encode(batch)
        if counter is None:
            width = values.shape[-1] if d_sae is None else d_sae
            counter = CofiringCounter(width, thresholds=thresholds, chunk_size=chunk_size,
                                      device=device if device is not None else values.device)
        counter.update(values)
    if counter is None:
        raise ValueError("co-firing: no batches")
    return counter.report()
