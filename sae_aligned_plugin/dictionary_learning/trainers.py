"""Aligned dictionary_learning trainers: the library's trainers training the aligned dictionaries (spec §5).

Each class is the library trainer with :class:`_AlignedTrainer` in front. Constructor keywords and defaults are
the base trainer's, except ``dict_class`` (our aligned dictionary) and ``wandb_name`` (our class name); the loss,
optimiser (ConstrainedAdam or Adam + decoder-gradient projection + renormalisation), schedules, AuxK and
thresholds are the base trainer's own code. Added: config validation at construction, a width/finiteness check
of every batch before any parameter changes, ``trainer_class``/``dict_class`` in ``config``, and (TopK family)
upstream's ``k_anneal_steps``.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
from dictionary_learning.trainers.p_anneal import PAnnealTrainer
from dictionary_learning.trainers.standard import StandardTrainer
from dictionary_learning.trainers.top_k import TopKTrainer
from torch import Tensor, nn

from sae_aligned_plugin.dictionary_learning.dictionaries import (
    AlignedAutoEncoder,
    AlignedAutoEncoderTopK,
    AlignedBatchTopKSAE,
    AlignedLinearEncoder,
)
from sae_aligned_plugin.core.aligned import project_encoder_to_alignment
from sae_aligned_plugin.validation import ConfigError, check_activations, validate_sparsity_config


ALIGNMENTS = ("reparameterized", "projected")


class _AlignedTrainer:
    """Common part: default dictionary, validation, batch checks and config names. Put it before the host trainer.

    ``alignment="projected"`` is the spec's ablation (§3.3), not the method: the library's own dictionary with a
    free encoder, snapped onto ``⟨e_i, d_i⟩ = 1`` after every optimiser step.
    """

    DICTIONARY: ClassVar[type[nn.Module]]
    ae: Any

    def __init__(self, *args: Any, alignment: str = "reparameterized", **kwargs: Any) -> None:
        if alignment not in ALIGNMENTS:
            raise ConfigError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.alignment = alignment
        host_init = super().__init__  # the library trainer's constructor (next in the MRO)
        bound = inspect.signature(host_init).bind(*args, **kwargs)
        if alignment == "reparameterized":
            bound.arguments.setdefault("dict_class", self.DICTIONARY)
        bound.arguments.setdefault("wandb_name", type(self).__name__)
        bound.apply_defaults()
        self._validate(dict(bound.arguments))
        host_init(**bound.arguments)
        if alignment == "projected":
            self._snap_encoder()

    @torch.no_grad()
    def _snap_encoder(self) -> None:
        """Projected-gradient ablation: ``e_i ← e_i − (⟨e_i, d_i⟩ − 1)·d_i/||d_i||²`` on the free encoder."""
        weight = self.ae.encoder.weight
        weight.copy_(project_encoder_to_alignment(weight, self.ae.decoder.weight.T))

    def _validate(self, arguments: dict[str, Any]) -> None:
        """Reject impossible configs (k outside (0, dict_size], negative penalties / lr) before anything is built."""
        validate_sparsity_config(SimpleNamespace(**arguments))

    def update(self, step: int, activations: Tensor) -> Any:
        """The base update, after checking the batch width and finiteness (raises ``ValueError``, nothing changed)."""
        check_activations(activations, self.ae.activation_dim)
        loss = super().update(step, activations)  # type: ignore[misc]
        if self.alignment == "projected":
            self._snap_encoder()
        return loss

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "trainer_class": type(self).__name__, "dict_class": type(self.ae).__name__,  # type: ignore[misc]
                "alignment": self.alignment}


class _AlignedReLUFamily(_AlignedTrainer):
    """Standard / p-annealing: resampled features restart from ``U = 0`` (``e_i = d_i``, the tied init, spec §4)."""

    def resample_neurons(self, deads: Tensor, activations: Tensor) -> None:
        """The base resampling (off by default); the base's reset of the encoder row becomes a reset of ``u_i``."""
        before = self.ae.decoder.weight.detach().clone()
        super().resample_neurons(deads, activations)  # type: ignore[misc]
        if isinstance(self.ae.encoder, AlignedLinearEncoder):
            with torch.no_grad():
                self.ae.encoder.weight_free[(self.ae.decoder.weight != before).any(dim=0)] = 0.0


class _AlignedTopKFamily(_AlignedTrainer):
    """TopK / BatchTopK: also accepts upstream's ``k_anneal_steps`` (k goes linearly from ``activation_dim`` to ``k``)."""

    def __init__(self, *args: Any, k_anneal_steps: int | None = None, **kwargs: Any) -> None:
        self.k_anneal_steps = k_anneal_steps
        super().__init__(*args, **kwargs)

    def _validate(self, arguments: dict[str, Any]) -> None:
        super()._validate(arguments)
        if self.k_anneal_steps is None:
            return
        steps, k, width, size = (arguments[key] for key in ("steps", "k", "activation_dim", "dict_size"))
        if not 0 < self.k_anneal_steps < steps:
            raise ConfigError(f"k_anneal_steps must satisfy 0 < k_anneal_steps < steps (={steps}), got {self.k_anneal_steps}")
        if not k < width <= size:
            raise ConfigError(f"k annealing starts at activation_dim: needs k < activation_dim <= dict_size, "
                              f"got k={k}, activation_dim={width}, dict_size={size}")

    def update(self, step: int, activations: Tensor) -> Any:
        loss = super().update(step, activations)
        if self.k_anneal_steps is not None:
            ratio = min(step, self.k_anneal_steps) / self.k_anneal_steps
            self.ae.k.fill_(int(self.ae.activation_dim * (1 - ratio) + self.k * ratio))
        return loss

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "k_anneal_steps": self.k_anneal_steps}


class AlignedStandardTrainer(_AlignedReLUFamily, StandardTrainer):
    """``StandardTrainer`` (ReLU + L1 with sparsity warm-up, ConstrainedAdam) on :class:`AlignedAutoEncoder`."""

    DICTIONARY = AlignedAutoEncoder


class AlignedPAnnealTrainer(_AlignedReLUFamily, PAnnealTrainer):
    """``PAnnealTrainer`` (Lp / Lp^p sparsity with p annealing, ConstrainedAdam) on :class:`AlignedAutoEncoder`."""

    DICTIONARY = AlignedAutoEncoder


class AlignedTopKTrainer(_AlignedTopKFamily, TopKTrainer):
    """``TopKTrainer`` (TopK + AuxK, geometric-median ``b_dec``, unit decoder) on :class:`AlignedAutoEncoderTopK`."""

    DICTIONARY = AlignedAutoEncoderTopK


class AlignedBatchTopKTrainer(_AlignedTopKFamily, BatchTopKTrainer):
    """``BatchTopKTrainer`` (batch TopK + AuxK, learned threshold, unit decoder) on :class:`AlignedBatchTopKSAE`."""

    DICTIONARY = AlignedBatchTopKSAE
