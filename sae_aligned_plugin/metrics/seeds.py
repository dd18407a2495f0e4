"""Seed-aware comparison of a scalar metric between two methods (MetaSAE spec §7.2, "Statistics").

The unit of replication is the training seed, not the latent pair: the ~F² pairs behind a mean |φ| share latents
and are far from independent, so a test over pairs (the paper's Welch t over 209M pairs) overstates significance.
Given one value per seed for each method::

    difference = mean(candidate) − mean(baseline),   relative = difference / |mean(baseline)|
    spread     = pooled seed-to-seed standard deviation (ddof 1) of the two methods
    effect     = difference / spread                 (how many seed-to-seed SDs the methods differ by)

When both methods ran on the same seeds (same init and data order) the comparison is paired: the per-seed
differences give ``paired_sd`` and a paired t-test (``scipy.stats.ttest_rel``); otherwise Welch's t-test over seeds.
With 3 seeds a t-test has little power; report ``effect`` and the per-seed values with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class SeedComparison:
    """Candidate vs baseline over seeds; ``paired`` when the same seeds were run for both."""

    seeds: tuple[int, ...] | None
    baseline: tuple[float, ...]
    candidate: tuple[float, ...]
    baseline_mean: float
    candidate_mean: float
    baseline_sd: float
    candidate_sd: float
    difference: float
    relative_difference: float
    spread: float
    effect: float
    paired: bool
    paired_sd: float
    t_statistic: float
    p_value: float

    def summary(self) -> dict[str, float]:
        """Floats only (``paired`` as 0/1, ``n_seeds``)."""
        names = ("baseline_mean", "candidate_mean", "baseline_sd", "candidate_sd", "difference",
                 "relative_difference", "spread", "effect", "paired_sd", "t_statistic", "p_value")
        return {"n_seeds": float(len(self.candidate)), "paired": float(self.paired),
                **{name: float(getattr(self, name)) for name in names}}


def compare_seeds(baseline: Mapping[int, float] | Sequence[float],
                  candidate: Mapping[int, float] | Sequence[float]) -> SeedComparison:
    """Compare one metric between methods over seeds. Mappings ``{seed: value}`` with the same seeds are paired;
    sequences (or different seeds) are compared as independent samples. Needs ≥ 2 values per method."""
    seeds: tuple[int, ...] | None = None
    if isinstance(baseline, Mapping) and isinstance(candidate, Mapping) and set(baseline) == set(candidate):
        seeds = tuple(sorted(baseline))
        a = np.array([baseline[s] for s in seeds], dtype=np.float64)
        b = np.array([candidate[s] for s in seeds], dtype=np.float64)
    else:
        a = np.array(list(baseline.values() if isinstance(baseline, Mapping) else baseline), dtype=np.float64)
        b = np.array(list(candidate.values() if isinstance(candidate, Mapping) else candidate), dtype=np.float64)
    if a.size < 2 or b.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"need at least 2 finite values per method, got {a.tolist()} and {b.tolist()}")
    sd_a, sd_b = float(a.std(ddof=1)), float(b.std(ddof=1))
    spread = math.sqrt(((a.size - 1) * sd_a**2 + (b.size - 1) * sd_b**2) / (a.size + b.size - 2))
    difference = float(b.mean() - a.mean())
    paired = seeds is not None
    with np.errstate(divide="ignore", invalid="ignore"):
        test = stats.ttest_rel(b, a) if paired else stats.ttest_ind(b, a, equal_var=False)
    return SeedComparison(
        seeds=seeds, baseline=tuple(a.tolist()), candidate=tuple(b.tolist()),
        baseline_mean=float(a.mean()), candidate_mean=float(b.mean()), baseline_sd=sd_a, candidate_sd=sd_b,
        difference=difference, relative_difference=difference / abs(float(a.mean())) if a.mean() else math.nan,
        spread=spread, effect=difference / spread if spread > 0 else math.copysign(math.inf, difference) if difference else 0.0,
        paired=paired, paired_sd=float((b - a).std(ddof=1)) if paired else math.nan,
        t_statistic=float(test.statistic), p_value=float(test.pvalue),
    )
