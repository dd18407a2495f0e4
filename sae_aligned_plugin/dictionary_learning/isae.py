"""Identifiable SAEs for dictionary_learning 0.1.x: :class:`ISAETrainer`, :class:`ISAEMETrainer` and their dictionaries.

Spec ``shared/papers/isae.md``; the math is :mod:`sae_aligned_plugin.core.isae` (the same functions the SAELens
classes call). The dictionaries hold SAELens-layout tensors (``W_enc [d, F]``, ``W_dec [F, d]``, ``b_dec [d]``, and
for iSAE-ME ``W_step [F, F]`` or ``W_step_left``/``W_step_right [F, r]``) plus int buffers ``k``, ``encoder_steps``,
``signed``, so an ``ae.pt`` describes itself. The trainers implement the authors' recipe (spec §1): Adam 3e-4
(0.9, 0.999), gradient clipping 1.0, 100 linear warm-up steps, constant, linear decay to 0 over the last 20 %;
intercept at the geometric median and σ² from the first batch; AuxK with a dead window of 8 batches.

``signed=False`` with ``arip_coefficient = l1_coefficient = 0`` is the paper's TopK rung and ``signed=True`` with
both 0 its AbsTopK rung, trained with the same recipe (used by :mod:`sae_aligned_plugin.experiments.isae_bench`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
from dictionary_learning.dictionary import Dictionary
from dictionary_learning.trainers.trainer import SAETrainer
from torch import Tensor, nn

from sae_aligned_plugin.core.isae import (
    Codes,
    ISAEForward,
    ISAEHyperparameters,
    ISAEParameters,
    SphereStatistics,
    StepFactor,
    batch_variance,
    encode_normalised,
    gaussian_unit_atoms,
    geometric_median,
    isae_forward,
    ista_step_factor,
    ista_step_factor_low_rank,
    undo_unit_sphere,
    unit_rows,
    unit_sphere,
)
from sae_aligned_plugin.dictionary_learning.loader import load_state_dict_strict, read_state_dict
from sae_aligned_plugin.validation import check_activations, validate_isae_config


class ISAEDictionary(Dictionary, nn.Module):
    """iSAE (``encoder_steps = 1``) or iSAE-ME dictionary: centre + unit-norm, (multistep) AbsTopK, decode, undo.

    ``decode`` maps back to input units with the statistics of the last ``encode`` (``forward`` does both), so call
    it on codes of the last encoded batch. ``scale_biases`` is a no-op: the model is invariant to a global input
    scale (``x ↦ c·x`` gives ``x̂ ↦ c·x̂``), so ``trainSAE(normalize_activations=True)`` needs no correction.
    """

    DEFAULT_STEPS: ClassVar[int] = 1

    def __init__(self, activation_dim: int, dict_size: int, k: int, encoder_steps: int | None = None,
                 step_matrix_rank: int | None = None, signed: bool = True) -> None:
        super().__init__()
        steps = self.DEFAULT_STEPS if encoder_steps is None else encoder_steps
        validate_isae_config(SimpleNamespace(activation_dim=activation_dim, dict_size=dict_size, k=k,
                                             encoder_steps=steps, step_matrix_rank=step_matrix_rank))
        self.activation_dim, self.dict_size = activation_dim, dict_size
        self.step_matrix_rank = step_matrix_rank
        self.W_dec = nn.Parameter(gaussian_unit_atoms(dict_size, activation_dim))
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone().contiguous())
        self.b_dec = nn.Parameter(torch.zeros(activation_dim))
        for name, value in (("k", k), ("encoder_steps", steps), ("signed", int(signed))):
            self.register_buffer(name, torch.tensor(value, dtype=torch.int64))
        if steps > 1 and step_matrix_rank is None:
            self.W_step = nn.Parameter(ista_step_factor(self.W_dec.detach()))
        elif steps > 1:
            left, right = ista_step_factor_low_rank(self.W_dec.detach(), step_matrix_rank)  # type: ignore[arg-type]
            self.W_step_left, self.W_step_right = nn.Parameter(left), nn.Parameter(right)
        self._sphere = SphereStatistics()

    def hyperparameters(self, **overrides: Any) -> ISAEHyperparameters:
        return ISAEHyperparameters(k=int(self.k), n_steps=int(self.encoder_steps), signed=bool(self.signed), **overrides)

    def step_factor(self) -> StepFactor | None:
        if int(self.encoder_steps) == 1:
            return None
        if self.step_matrix_rank is None:
            return StepFactor(full=self.W_step)
        return StepFactor(left=self.W_step_left, right=self.W_step_right)

    def isae_parameters(self) -> ISAEParameters:
        return ISAEParameters(self.W_enc, self.W_dec, self.b_dec, self.step_factor())

    def codes(self, x: Tensor, support: int = 0) -> Codes:
        """Sparse codes (values, indices, last pre-activation, optional top-``support`` indices) of raw inputs;
        remembers the input statistics for :meth:`decode`."""
        return encode_normalised(self._sphere.apply(x), self.isae_parameters(), self.hyperparameters(), support)

    def process_sae_in(self, x: Tensor) -> Tensor:
        """``x_n − b``: the normalised input the decoder reconstructs without its intercept."""
        return self._sphere.apply(x) - self.b_dec

    def encode(self, x: Tensor) -> Tensor:
        return self.codes(x).dense()

    def decode(self, f: Tensor) -> Tensor:
        return self._sphere.undo(f @ self.W_dec + self.b_dec)

    def forward(self, x: Tensor, output_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        f = self.encode(x)
        x_hat = self.decode(f)
        return (x_hat, f) if output_features else x_hat

    def scale_biases(self, scale: float) -> None:
        """No-op (scale invariance; see the class docstring)."""

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor]) -> ISAEDictionary:
        """Build from a state dict; shapes, ``k``, T, sign and the rank of ``F`` come from the tensors."""
        if not isinstance(state_dict.get("W_dec"), Tensor) or "k" not in state_dict:
            raise ValueError(f"not an {cls.__name__} state dict (keys: {sorted(state_dict)})")
        dict_size, activation_dim = state_dict["W_dec"].shape
        rank = state_dict["W_step_left"].shape[1] if "W_step_left" in state_dict else None
        model = cls(activation_dim, dict_size, int(state_dict["k"]), int(state_dict["encoder_steps"]), rank,
                    bool(state_dict["signed"]))
        load_state_dict_strict(model, state_dict, cls.__name__)
        return model

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None, **_: Any) -> ISAEDictionary:
        """Load an ``ae.pt`` with ``torch.load(weights_only=True)`` (see :meth:`from_state_dict`)."""
        with torch.random.fork_rng(devices=[]):
            return cls.from_state_dict(read_state_dict(path)).to(device)


class ISAEMEDictionary(ISAEDictionary):
    """iSAE-ME dictionary: ``encoder_steps`` defaults to 5."""

    DEFAULT_STEPS = 5


def _schedule(steps: int, warmup_steps: int, decay_start: int) -> Any:
    """Linear warm-up over ``warmup_steps``, constant, then linear decay to 0 from ``decay_start`` to ``steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step >= decay_start:
            return max(0.0, (steps - step) / max(1, steps - decay_start))
        return 1.0

    return factor


class ISAETrainer(SAETrainer):
    """``trainSAE`` trainer for :class:`ISAEDictionary` (iSAE: AbsTopK + aRIP 0.1 + AuxK, code-only L1 0.01).

    Keywords beyond the library's common ones (``steps, activation_dim, dict_size, k, layer, lm_name``):
    ``encoder_steps`` (T), ``step_matrix_rank`` (None = dense F), ``signed``, ``arip_coefficient``,
    ``l1_coefficient``, ``aux_coefficient``, ``aux_k`` (None = d // 2), ``arip_support_multiplier``,
    ``dead_window`` (batches), ``lr``, ``warmup_steps``, ``decay_start`` (None = 80 % of ``steps``),
    ``grad_clip_norm``, ``probe_seed``, ``device``, ``seed``.
    """

    DICTIONARY: ClassVar[type[ISAEDictionary]] = ISAEDictionary

    def __init__(self, steps: int, activation_dim: int, dict_size: int, k: int, layer: int, lm_name: str, *,
                 encoder_steps: int | None = None, step_matrix_rank: int | None = None, signed: bool = True,
                 arip_coefficient: float = 0.1, l1_coefficient: float = 0.01, aux_coefficient: float = 1.0 / 32,
                 aux_k: int | None = None, arip_support_multiplier: int = 2, dead_window: int = 8,
                 lr: float = 3e-4, warmup_steps: int = 100, decay_start: int | None = None,
                 grad_clip_norm: float = 1.0, probe_seed: int = 0, device: str | torch.device = "cpu",
                 seed: int | None = None, wandb_name: str | None = None, submodule_name: str | None = None,
                 dict_class: type[ISAEDictionary] | None = None) -> None:
        super().__init__(seed)
        hp = ISAEHyperparameters(k=k, signed=signed, arip_coefficient=arip_coefficient, l1_coefficient=l1_coefficient,
                                 aux_coefficient=aux_coefficient, aux_k=aux_k, support_multiplier=arip_support_multiplier)
        validate_isae_config(SimpleNamespace(**vars(hp), dict_size=dict_size, activation_dim=activation_dim, lr=lr,
                                             step_matrix_rank=step_matrix_rank,
                                             arip_support_multiplier=arip_support_multiplier))
        if seed is not None:
            torch.manual_seed(seed)
        self.steps, self.layer, self.lm_name, self.submodule_name = steps, layer, lm_name, submodule_name
        self.device = torch.device(device)
        self.ae = (dict_class or self.DICTIONARY)(activation_dim, dict_size, k, encoder_steps, step_matrix_rank,
                                                  signed).to(self.device)
        self.hp = replace(hp, n_steps=int(self.ae.encoder_steps))
        self.lr, self.warmup_steps, self.grad_clip_norm = lr, warmup_steps, grad_clip_norm
        self.decay_start = int(0.8 * steps) if decay_start is None else decay_start
        self.dead_window, self.probe_seed = dead_window, probe_seed
        self.wandb_name = wandb_name or type(self).__name__
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           _schedule(steps, warmup_steps, self.decay_start))
        self.steps_since_fired = torch.zeros(dict_size, dtype=torch.int64, device=self.device)
        self.mse_variance: Tensor | None = None
        self.logging_parameters = ["dead_fraction"]

    @property
    def dead_fraction(self) -> float:
        return float(self.dead_mask().float().mean())

    def dead_mask(self) -> Tensor:
        """Latents with no nonzero code (``|z| > 0``) in the last ``dead_window`` batches (spec §1.5)."""
        return self.steps_since_fired >= self.dead_window

    @torch.no_grad()
    def _initialise(self, x_n: Tensor) -> None:
        self.ae.b_dec.copy_(geometric_median(x_n))
        self.mse_variance = batch_variance(x_n)

    def _forward(self, x: Tensor, step: int) -> tuple[Tensor, Tensor, ISAEForward]:
        """``(x, x̂ in input units, core forward)`` after the batch checks and the per-forward renormalisation."""
        check_activations(x, self.ae.activation_dim)
        x = x.to(self.device, self.ae.W_dec.dtype)
        unit_rows(self.ae.W_dec.data)
        x_n, mean, norm = unit_sphere(x)
        if self.mse_variance is None:
            self._initialise(x_n)
        out = isae_forward(x_n, self.ae.isae_parameters(), self.hp, mse_variance=self.mse_variance,
                           dead=self.dead_mask(), probe_seed=self.probe_seed, step=int(step))
        return x, undo_unit_sphere(out.reconstruction, mean, norm), out

    def loss(self, x: Tensor, step: int | None = None, logging: bool = False, **_: Any) -> Any:
        """The loss tensor, or ``(x, x_hat, f, {name: value})`` with ``logging=True`` (what ``trainSAE`` logs)."""
        x, x_hat, out = self._forward(x, step or 0)
        if not logging:
            return out.loss
        losses = {"loss": out.loss, **out.losses}
        return x, x_hat, out.codes.dense(), {name: float(value.detach()) for name, value in losses.items()}

    def update(self, step: int, activations: Tensor) -> float:
        """One step: forward, backward, clip, Adam, schedule; firing counts use ``|z| > 0`` (signed codes)."""
        out = self._forward(activations, step)[2]
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.ae.parameters(), self.grad_clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            fired = torch.zeros_like(self.steps_since_fired, dtype=torch.bool)
            fired[out.codes.indices[out.codes.values != 0]] = True
            self.steps_since_fired += 1
            self.steps_since_fired[fired] = 0
        return float(out.loss.detach())

    @property
    def config(self) -> dict[str, Any]:
        return {
            "trainer_class": type(self).__name__, "dict_class": type(self.ae).__name__,
            "activation_dim": self.ae.activation_dim, "dict_size": self.ae.dict_size, "k": self.hp.k,
            "encoder_steps": int(self.ae.encoder_steps), "step_matrix_rank": self.ae.step_matrix_rank,
            "signed": self.hp.signed, "arip_coefficient": self.hp.arip_coefficient,
            "l1_coefficient": self.hp.l1_coefficient, "aux_coefficient": self.hp.aux_coefficient,
            "aux_k": self.hp.aux_k, "arip_support_multiplier": self.hp.support_multiplier,
            "dead_window": self.dead_window, "lr": self.lr, "warmup_steps": self.warmup_steps,
            "decay_start": self.decay_start, "grad_clip_norm": self.grad_clip_norm, "probe_seed": self.probe_seed,
            "steps": self.steps, "seed": self.seed, "device": str(self.device), "layer": self.layer,
            "lm_name": self.lm_name, "wandb_name": self.wandb_name, "submodule_name": self.submodule_name,
        }


class ISAEMETrainer(ISAETrainer):
    """``trainSAE`` trainer for :class:`ISAEMEDictionary` (iSAE-ME: T = 5 steps by default)."""

    DICTIONARY = ISAEMEDictionary
