"""Aligned SAELens architectures: the base architecture with ``W_enc := E(W_dec, U)`` (spec §3, §5).

Each class is the SAELens class of the base architecture with :class:`AlignedEncoderMixin` in front, so
the forward pass, losses, AuxK, thresholds, trainer and runners are SAELens's own; only the encoder is
derived. The free tensor ``U`` is stored as the parameter ``W_enc_free`` in the row layout of ``W_dec``
(``[d_sae, d_in]``, so the row-wise map reads both contiguously); ``sae.W_enc`` is a property that returns
``E(W_dec, U)ᵀ`` (``[d_in, d_sae]``) computed in fp32 on every access.

``save_inference_model`` exports the *base* architecture's plain SAELens format with ``W_enc``
materialised (``metadata.training_architecture`` names the aligned architecture), so an export loads with
``SAE.load_from_disk`` even without this plugin, and SAEBench sees ordinary weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from numpy.typing import NDArray
from sae_lens import (
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEConfig, TrainStepInput, TrainStepOutput
from torch import Tensor, nn

from sae_aligned_plugin.core.aligned import aligned_encoder, alignment_scores
from sae_aligned_plugin.saelens.registry import Family
from sae_aligned_plugin.validation import check_activation_width, check_finite, validate_sparsity_config


class AlignedConfigMixin:
    """Config side: the registered name, the base architecture used for export, and config validation."""

    ARCHITECTURE: ClassVar[str]
    EXPORT_CONFIG: ClassVar[type[SAEConfig]]

    @classmethod
    def architecture(cls) -> str:
        return cls.ARCHITECTURE

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]
        validate_sparsity_config(self)

    def get_inference_config_class(self) -> type[SAEConfig]:
        """Exports use the base architecture's plain SAELens config (no plugin needed to load them)."""
        return self.EXPORT_CONFIG


class AlignedEncoderMixin:
    """Model side: ``W_enc`` derived from ``(W_dec, W_enc_free)``; folds and export keep ``⟨e_i, d_i⟩ = 1``."""

    W_dec: nn.Parameter
    W_enc_free: nn.Parameter
    _parameters: dict[str, nn.Parameter | None]

    @property
    def W_enc(self) -> Tensor:  # type: ignore[override]
        """``[d_in, d_sae]`` encoder with columns ``e_i = d_i/||d_i||² + (I − d̂_i d̂_iᵀ) u_i``."""
        exposed = self._parameters.get("W_enc")
        if exposed is not None:  # inside the base initialiser or a fold (see _encoder_as_parameter)
            return exposed
        return aligned_encoder(self.W_dec, self.W_enc_free).T.to(self.W_dec.dtype)

    def initialize_weights(self) -> None:
        """Base initialisation, then ``U = 0`` (spec §4: ``e_i = d_i/||d_i||²``, the tied init)."""
        super().initialize_weights()  # type: ignore[misc]
        tied = self._parameters.pop("W_enc")
        assert tied is not None
        self.W_enc_free = nn.Parameter(torch.zeros_like(tied.T).contiguous())

    @contextmanager
    def _encoder_as_parameter(self) -> Iterator[None]:
        """Expose the materialised ``W_enc`` as a real parameter while host code edits it in place.

        Afterwards ``U := W_encᵀ``: for an encoder that satisfies the constraint, ``E(D, E) = E`` exactly,
        and any rounding off the hyperplane is projected away by the map itself.
        """
        if "W_enc" in self._parameters:  # nested fold (TopK whitening folds the decoder norm first)
            yield
            return
        self._parameters["W_enc"] = nn.Parameter(self.W_enc.detach().clone(), requires_grad=False)
        try:
            yield
        finally:
            edited = self._parameters.pop("W_enc")
            assert edited is not None
            with torch.no_grad():
                self.W_enc_free.copy_(edited.T)

    @torch.no_grad()
    def fold_and_get_W_dec_norm(self) -> Tensor:
        with self._encoder_as_parameter():
            return super().fold_and_get_W_dec_norm()  # type: ignore[misc]

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        with self._encoder_as_parameter():
            super().fold_activation_norm_scaling_factor(scaling_factor)  # type: ignore[misc]

    @torch.no_grad()
    def fold_activation_whitening(self, mean: Tensor, whitening_matrix: Tensor, unwhitening_matrix: Tensor) -> None:
        with self._encoder_as_parameter():
            super().fold_activation_whitening(mean, whitening_matrix, unwhitening_matrix)  # type: ignore[misc]

    def process_sae_in(self, sae_in: Tensor) -> Tensor:
        check_activation_width(self.reshape_fn_in(sae_in), self.cfg.d_in)  # type: ignore[attr-defined]
        return super().process_sae_in(sae_in)  # type: ignore[misc]

    @torch.no_grad()
    def alignment_scores(self) -> Tensor:
        """``a_i = ⟨e_i, d_i⟩`` per latent (≡ 1 up to fp32 rounding)."""
        return alignment_scores(self.W_enc.T, self.W_dec)


class AlignedTrainingMixin(AlignedEncoderMixin):
    """Training side: input checks, aligned export, and alignment / dead-fraction logging at SAELens log steps."""

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        check_finite(step_input.sae_in)
        output = super().training_forward_pass(step_input)  # type: ignore[misc]
        if step_input.is_logging_step:
            scores = self.alignment_scores()
            output.metrics["alignment/max_abs_deviation"] = (scores - 1.0).abs().max()
            output.metrics["alignment/mean_score"] = scores.mean()
            if step_input.dead_neuron_mask is not None:
                output.metrics["dead_fraction"] = step_input.dead_neuron_mask.float().mean()
        return output

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        """Materialise ``W_enc`` (fp32 math, stored in the SAE dtype) before the base export folds."""
        state_dict["W_enc"] = self.W_enc.detach().clone().contiguous()
        del state_dict["W_enc_free"]
        super().process_state_dict_for_saving_inference(state_dict)  # type: ignore[misc]

    @torch.no_grad()
    def log_histograms(self) -> dict[str, NDArray[np.generic]]:
        return {
            **super().log_histograms(),  # type: ignore[misc]
            "weights/alignment_score": self.alignment_scores().cpu().numpy(),
        }


def _subclass(name: str, mixin: type, base: type, **namespace: Any) -> type:
    """A named, module-level (so picklable) subclass ``name(mixin, base)``; dataclass fields are inherited."""
    cls = type(name, (mixin, base), {"__module__": __name__, "__qualname__": name, **namespace})
    globals()[name] = cls
    return cls


def _aligned_family(
    architecture: str,
    stem: str,
    base: str,
    inference: tuple[type, type],
    training: tuple[type, type],
    export_config: type[SAEConfig],
) -> Family:
    """Inference config + SAE and training config + SAE for one aligned architecture."""
    inference_cfg_base, inference_sae_base = inference
    training_cfg_base, training_sae_base = training
    return Family(
        _subclass(f"Aligned{stem}SAEConfig", AlignedConfigMixin, inference_cfg_base, ARCHITECTURE=architecture,
                  EXPORT_CONFIG=inference_cfg_base),
        _subclass(f"Aligned{stem}SAE", AlignedEncoderMixin, inference_sae_base),
        _subclass(f"Aligned{stem}TrainingSAEConfig", AlignedConfigMixin, training_cfg_base, ARCHITECTURE=architecture,
                  EXPORT_CONFIG=export_config),
        _subclass(f"Aligned{stem}TrainingSAE", AlignedTrainingMixin, training_sae_base),
        base,
    )


class BatchTopKCheckpointGuard:
    """Inference form of the BatchTopK family (a JumpReLU), refusing their *training* checkpoints with a clear
    message: their batch threshold is in units of ``hidden_pre·||d_i||`` and only ``save_inference_model``
    converts it (as in SAELens, where ``batchtopk`` has no inference class at all)."""

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        if "topk_threshold" in state_dict:
            raise ValueError(
                f"this is a training checkpoint of {self.cfg.architecture()!r} (it has 'topk_threshold'): load it "  # type: ignore[attr-defined]
                "with TrainingSAE.load_from_disk, or export it with save_inference_model and load that with SAE"
            )
        super().process_state_dict_for_loading(state_dict)  # type: ignore[misc]


_JUMPRELU_FROM_BATCHTOPK = (JumpReLUSAEConfig, _subclass("BatchTopKInferenceSAE", BatchTopKCheckpointGuard,
                                                         JumpReLUSAE))

ALIGNED_FAMILIES: dict[str, Family] = {
    name: _aligned_family(name, stem, base, inference, training, export)
    for name, stem, base, inference, training, export in [
        ("aligned_standard", "Standard", "standard", (StandardSAEConfig, StandardSAE),
         (StandardTrainingSAEConfig, StandardTrainingSAE), StandardSAEConfig),
        ("aligned_topk", "TopK", "topk", (TopKSAEConfig, TopKSAE),
         (TopKTrainingSAEConfig, TopKTrainingSAE), TopKSAEConfig),
        ("aligned_jumprelu", "JumpReLU", "jumprelu", (JumpReLUSAEConfig, JumpReLUSAE),
         (JumpReLUTrainingSAEConfig, JumpReLUTrainingSAE), JumpReLUSAEConfig),
        ("aligned_batchtopk", "BatchTopK", "batchtopk", _JUMPRELU_FROM_BATCHTOPK,
         (BatchTopKTrainingSAEConfig, BatchTopKTrainingSAE), JumpReLUSAEConfig),
        ("aligned_matryoshka_batchtopk", "MatryoshkaBatchTopK", "matryoshka_batchtopk", _JUMPRELU_FROM_BATCHTOPK,
         (MatryoshkaBatchTopKTrainingSAEConfig, MatryoshkaBatchTopKTrainingSAE), JumpReLUSAEConfig),
    ]
}
