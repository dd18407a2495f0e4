"""The OMP oracle (spec ``isae.md`` §5): ``k`` greedy orthogonal-matching-pursuit steps on a learned dictionary.

It isolates the dictionary's conditioning from the encoder: compare the oracle codes of two runs with the same
alignment and IoU/ℓ2 as the SAE codes. Batched in torch (the authors' is numpy on one batch of 512): per step the
atom with the largest ``|⟨r, d̂_j⟩|`` among the unused ones joins the support and the coefficients are refit by least
squares (normal equations in float64). Atoms are unit-normalised first, so codes are in unit-atom units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BATCH_CHUNK = 512


def _omp_chunk(unit: Tensor, x: Tensor, k: int) -> Tensor:
    batch = x.shape[0]
    support = torch.empty(batch, 0, dtype=torch.int64, device=x.device)
    residual = x
    coef = x.new_zeros(batch, 0)
    for _ in range(k):
        corr = (residual @ unit.T).abs()
        corr.scatter_(-1, support, -1.0)  # never re-pick an atom
        support = torch.cat([support, corr.argmax(-1, keepdim=True)], dim=-1)
        atoms = unit[support]  # [B, t, N]
        gram = atoms @ atoms.transpose(-1, -2)
        rhs = (atoms @ x.unsqueeze(-1)).squeeze(-1)
        coef = torch.linalg.lstsq(gram, rhs.unsqueeze(-1)).solution.squeeze(-1)
        residual = x - (coef.unsqueeze(-2) @ atoms).squeeze(-2)
    return torch.zeros(batch, unit.shape[0], dtype=torch.float64, device=x.device).scatter(-1, support, coef)


@torch.no_grad()
def omp_codes(decoder: Tensor, x: Tensor, k: int) -> Tensor:
    """OMP codes ``[B, K]`` (float64) of targets ``x [B, N]`` over the unit-normalised rows of ``decoder [K, N]``.

    Exactly ``k`` atoms per sample (``k ≤ min(K, N)``); noiseless ``x = z D`` with a well-conditioned ``D`` and a
    ``k``-sparse ``z`` is recovered exactly (spec check 6).
    """
    if not 0 < k <= min(decoder.shape):
        raise ValueError(f"OMP needs 0 < k <= min(K, N) = {min(decoder.shape)}, got k={k}")
    unit = F.normalize(decoder.detach().double(), dim=-1)
    flat = x.detach().reshape(-1, x.shape[-1]).double().to(unit.device)
    return torch.cat([_omp_chunk(unit, flat[start : start + BATCH_CHUNK], k)
                      for start in range(0, flat.shape[0], BATCH_CHUNK)])
