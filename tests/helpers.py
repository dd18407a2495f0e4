"""Small builders shared by the test modules."""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import TrainingSAE, TrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput

from sae_aligned_plugin.saelens import ALIGNED_FAMILIES

ALIGNED = sorted(ALIGNED_FAMILIES)


def sae_config_dict(architecture: str, d_in: int = 16, d_sae: int = 64, **extra: Any) -> dict[str, Any]:
    """A small, valid config dict for any registered architecture."""
    config: dict[str, Any] = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae}
    if "topk" in architecture or "isae" in architecture:
        config["k"] = 4
    if "metasae" in architecture:  # meta size 6 (≈ 9 % of 64); a meta phase before primary steps 5, 10, ...
        config.update(meta_k=2, n_primary_steps=5, n_meta_steps=2)
    if "matryoshka" in architecture:
        config["matryoshka_widths"] = [d_sae // 4, d_sae]
    if "standard" in architecture:
        config["l1_coefficient"] = 1e-3
    if "jumprelu" in architecture:
        config["l0_coefficient"] = 1e-3
    config.update(extra)
    return config


def make_sae(architecture: str, **kwargs: Any) -> TrainingSAE:
    return TrainingSAE.from_dict(TrainingSAEConfig.from_dict(sae_config_dict(architecture, **kwargs)).to_dict())


def step_input(sae: TrainingSAE, x: torch.Tensor, *, step: int = 0, logging: bool = False,
               dead: torch.Tensor | None = None) -> TrainStepInput:
    coefficients = {name: (c.value if hasattr(c, "value") else c) for name, c in sae.get_coefficients().items()}
    return TrainStepInput(sae_in=x, coefficients=coefficients,
                          dead_neuron_mask=dead if dead is not None else torch.zeros(sae.cfg.d_sae, dtype=torch.bool),
                          n_training_steps=step, is_logging_step=logging)


def relative_deviation(encoder_rows: torch.Tensor, decoder_rows: torch.Tensor) -> float:
    """max_i |⟨e_i, d_i⟩ − 1| / (||e_i||·||d_i||): spec check 1."""
    e, d = encoder_rows.double(), decoder_rows.double()
    scores = (e * d).sum(-1)
    return float(((scores - 1).abs() / (e.norm(dim=-1) * d.norm(dim=-1))).max())


def sae_deviation(sae: Any) -> float:
    return relative_deviation(sae.W_enc.detach().T, sae.W_dec.detach())


def train_steps(sae: TrainingSAE, n: int, lr: float = 1e-2, batch: int = 64, seed: int = 0,
                data: torch.Tensor | None = None) -> list[float]:
    """A few Adam steps on sparse synthetic data (or on random rows of ``data`` ``[N, d_in]``); returns the losses."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(32, sae.cfg.d_in, generator=g)
    optimiser = torch.optim.Adam(sae.parameters(), lr=lr)
    losses = []
    for step in range(n):
        if data is None:
            codes = torch.rand(batch, 32, generator=g) * (torch.rand(batch, 32, generator=g) < 0.1)
            x = codes @ directions
        else:
            x = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        out = sae.training_forward_pass(step_input(sae, x, step=step))
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(float(out.loss.detach()))
    return losses
