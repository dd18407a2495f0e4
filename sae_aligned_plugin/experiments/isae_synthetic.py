"""The iSAE paper's synthetic data (spec ``shared/papers/isae.md`` §7, ``rsae/synthetic_data.py``), scaled by arguments.

* Atoms: ``M = max(2, K // 100)`` component means ~ N(0, s·I_N); the ``K`` atoms are assigned to components in
  balanced shuffled order, ``atom = mean + √(1−s)·N(0, I_N)``, then unit-normalised. ``s = 0`` is the i.i.d. regime
  (uniform on the sphere), ``s = 0.3`` the mixture regime.
* Codes: dense N(0, 1), keep the ``k`` largest ``|·|`` with their signs, renormalise each code to unit ℓ2.
* ``x = z A`` (noiseless), then centred and unit-normalised per sample (the SAEs do this themselves as well).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae_aligned_plugin.core.isae import select_topk, unit_rows, unit_sphere

IID, MIXTURE = 0.0, 0.3


@dataclass(frozen=True)
class SyntheticDictionary:
    """Ground-truth atoms ``atoms [K, N]`` (unit rows) and the sparsity ``k`` of the codes that mix them."""

    atoms: Tensor
    k: int
    mixture_scale: float

    @classmethod
    def generate(cls, d_in: int, d_latent: int, k: int, mixture_scale: float, seed: int) -> SyntheticDictionary:
        generator = torch.Generator().manual_seed(seed)
        n_components = max(2, d_latent // 100)
        means = torch.randn(n_components, d_in, generator=generator) * mixture_scale**0.5
        assignment = torch.arange(d_latent) % n_components
        assignment = assignment[torch.randperm(d_latent, generator=generator)]
        noise = torch.randn(d_latent, d_in, generator=generator) * (1.0 - mixture_scale) ** 0.5
        return cls(unit_rows(means[assignment] + noise), k, mixture_scale)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(x, z)``: ``n`` normalised observations ``[n, N]`` and their unit-norm ``k``-sparse codes ``[n, K]``."""
        dense = torch.randn(n, self.atoms.shape[0], generator=generator)
        codes = select_topk(dense, self.k).dense()
        codes = codes / codes.norm(dim=-1, keepdim=True)
        return unit_sphere(codes @ self.atoms)[0], codes

    def batches(self, batch_size: int, seed: int):  # type: ignore[no-untyped-def]
        """Endless fresh batches ``[batch_size, N]`` (online training, no repeated samples)."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield self.sample(batch_size, generator)[0]
