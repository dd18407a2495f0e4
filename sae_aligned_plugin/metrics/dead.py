"""Dead latents over a fixed token window (spec §6, "Dead features / alive fraction").

A latent is alive if ``|z_i| > 0`` on at least one token of the window (``|z|``, not ``z > 0``: some SAEs have
signed codes), dead otherwise; ``fraction_dead = #dead / F``. State the window (``n_tokens``) with the number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from sae_aligned_plugin.metrics._arrays import describe, frozen_array


@dataclass(frozen=True, eq=False)
class DeadFeatureReport:
    """Firing statistics of each latent over ``n_tokens`` tokens.

    ``firing_counts[i]`` = number of tokens with ``z_i ≠ 0`` (exact, int64); ``firing_rate = firing_counts / n_tokens``;
    ``fraction_dead`` = fraction of latents with ``firing_counts == 0``.
    """

    n_tokens: int
    fraction_dead: float
    firing_counts: NDArray[np.int64]
    firing_rate: NDArray[np.float64]

    @property
    def d_sae(self) -> int:
        return int(self.firing_counts.size)

    @property
    def n_dead(self) -> int:
        return int(np.count_nonzero(self.firing_counts == 0))

    def summary(self) -> dict[str, float]:
        """Floats only: ``n_tokens``, ``d_sae``, ``n_dead``, ``fraction_dead``, ``fraction_alive``,
        ``mean_l0`` (mean number of firing latents per token) and ``firing_rate_mean/_std/_min/_median/_max``."""
        return {
            "n_tokens": float(self.n_tokens),
            "d_sae": float(self.d_sae),
            "n_dead": float(self.n_dead),
            "fraction_dead": float(self.fraction_dead),
            "fraction_alive": 1.0 - float(self.fraction_dead),
            "mean_l0": float(self.firing_counts.sum() / self.n_tokens),
            **describe("firing_rate", self.firing_rate),
        }


@torch.no_grad()
def dead_fraction(
    encode: Callable[[Tensor], Tensor], batches: Iterable[Tensor], *, d_sae: int | None = None
) -> DeadFeatureReport:
    """Count, per latent, the tokens on which ``encode`` gives a nonzero code, over every batch in ``batches``.

    ``encode`` maps ``[..., d]`` activations to codes ``[..., F]`` (e.g. ``sae.encode``); leading dimensions are
    flattened into tokens. ``d_sae``, if given, is checked against ``F``. Runs under ``torch.no_grad``; counts are
    accumulated as int64 on the codes' device. Raises ``ValueError`` for an empty window, codes of changing width,
    or non-finite codes (a NaN would otherwise count as a firing).
    """
    counts: Tensor | None = None
    n_tokens = 0
    for batch in batches:
        codes = encode(batch)
        width = codes.shape[-1]
        expected = d_sae if counts is None else counts.numel()
        if expected is not None and width != expected:
            raise ValueError(f"dead_fraction: codes have {width} latents, expected {expected}")
        if not bool(torch.isfinite(codes).all()):
            raise ValueError(f"dead_fraction: non-finite codes in a batch of shape {tuple(codes.shape)}")
        codes = codes.reshape(-1, width)
        fired = (codes != 0).sum(dim=0, dtype=torch.int64)
        counts = fired if counts is None else counts + fired.to(counts.device)
        n_tokens += codes.shape[0]
    if counts is None or n_tokens == 0:
        raise ValueError("dead_fraction: the token window is empty (no batches or no tokens)")
    firing_counts = frozen_array(counts, dtype=np.int64)
    return DeadFeatureReport(
        n_tokens=n_tokens,
        fraction_dead=float(np.count_nonzero(firing_counts == 0) / firing_counts.size),
        firing_counts=firing_counts,
        firing_rate=frozen_array(firing_counts / n_tokens),
    )
