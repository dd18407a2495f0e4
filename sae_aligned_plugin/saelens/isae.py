"""Identifiable SAEs in SAELens: ``isae``, ``isae_me`` and ``aligned_isae`` (spec ``shared/papers/isae.md``).

Each class is SAELens's AbsTopK class (``sae_lens/saes/abstopk_sae.py``) with mixins in front:

* :class:`UnitSphereMixin`: SAELens's run-time normalisation hooks centre and unit-normalise every input inside
  ``encode`` and undo it exactly in ``decode`` (so SAEBench sees reconstructions in the original units);
* :class:`ISAEWeightsMixin`: the recipe's initialisation (Gaussian unit atoms, ``W_enc = W_decᵀ``, no encoder bias:
  ``b_enc`` is a zero buffer, kept because tools read ``sae.b_enc``);
* :class:`MultistepMixin` (``isae_me``): the learned ``F`` (dense ``W_step [K, K]`` or, with
  ``step_matrix_rank = r``, ``W_step_left @ W_step_right.T`` with ``[K, r]`` factors) and the multistep encoder;
* :class:`ISAETrainingMixin`: the training forward of :func:`~sae_aligned_plugin.core.isae.isae_forward` (loss in
  normalised units, aRIP, paper AuxK, optional L1), data-dependent init on the first batch (intercept at the
  geometric median, MSE normaliser σ²) and the hard renormalisation of ``W_dec`` rows in every training forward.

``isae`` encodes with SAELens's own ``AbsTopKSAE.encode``; ``isae_me`` with the core multistep encoder. Both have
their own registered inference class, so loading an export needs ``import sae_aligned_plugin`` first.
``aligned_isae`` is the aligned encoder map (:mod:`sae_aligned_plugin.saelens.aligned`) composed with ``isae``
(its export is an ``isae`` SAE with the derived encoder materialised).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sae_lens.saes.abstopk_sae import AbsTopKSAE, AbsTopKSAEConfig, AbsTopKTrainingSAE, AbsTopKTrainingSAEConfig
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput, TrainStepOutput
from torch import Tensor, nn

from sae_aligned_plugin.core.isae import (
    Codes,
    ISAEHyperparameters,
    ISAEParameters,
    SphereStatistics,
    StepFactor,
    batch_variance,
    gaussian_unit_atoms,
    geometric_median,
    isae_forward,
    ista_step_factor,
    ista_step_factor_low_rank,
    multistep_encode,
    undo_unit_sphere,
    unit_rows,
    unit_sphere,
)
from sae_aligned_plugin.saelens.aligned import _aligned_family
from sae_aligned_plugin.saelens.registry import Family
from sae_aligned_plugin.validation import ConfigError, check_activations, validate_isae_config

NORMALISATIONS = ("none", "expected_average_only_in")
TRAINING_BUFFERS = ("data_initialised", "mse_variance")


# ----------------------------------------------------------------------------------------------- configs


def _validate(cfg: Any) -> None:
    validate_isae_config(cfg)
    if cfg.rescale_acts_by_decoder_norm:
        raise ConfigError("iSAEs keep unit-norm decoder rows: rescale_acts_by_decoder_norm must be False")
    if cfg.normalize_activations not in NORMALISATIONS:
        raise ConfigError(f"iSAEs normalise each sample themselves: normalize_activations must be one of "
                          f"{NORMALISATIONS} (a global scale is harmless), got {cfg.normalize_activations!r}")
    if not cfg.apply_b_dec_to_input:
        raise ConfigError("iSAEs use a tied intercept (x − b is encoded): apply_b_dec_to_input must be True")
    if getattr(cfg, "use_sparse_activations", False):
        raise ConfigError("use_sparse_activations is not supported by iSAEs")


class _ISAEConfigMixin:
    ARCHITECTURE = "isae"

    @classmethod
    def architecture(cls) -> str:
        return cls.ARCHITECTURE

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]
        _validate(self)


@dataclass
class ISAESAEConfig(_ISAEConfigMixin, AbsTopKSAEConfig):
    """Inference config of ``isae``: AbsTopK with ``k`` (SAELens field), per-sample unit-sphere inputs."""

    rescale_acts_by_decoder_norm: bool = False


@dataclass
class ISAEMESAEConfig(ISAESAEConfig):
    """Inference config of ``isae_me``: ``encoder_steps`` (T) and ``step_matrix_rank`` (None = dense ``F``)."""

    ARCHITECTURE = "isae_me"
    encoder_steps: int = 5
    step_matrix_rank: int | None = None


@dataclass
class ISAETrainingSAEConfig(_ISAEConfigMixin, AbsTopKTrainingSAEConfig):
    """Training config of ``isae``. Defaults follow spec §1–3 (``k`` as in SAELens; the paper uses 40).

    ``l1_coefficient`` is the authors' code-only L1 term ``Σ|z|/(B·k)`` (0 gives the paper as written);
    ``aux_k`` None = ``d_in // 2``; ``probe_seed`` seeds the aRIP probe (keyed on the step). SAELens's
    ``dead_feature_window`` (runner config) is the AuxK dead window; the paper uses 8 steps.
    ``decoder_init_norm`` is not used: atoms start (and stay) at unit norm.
    """

    rescale_acts_by_decoder_norm: bool = False
    decoder_init_norm: float | None = 1.0
    aux_loss_coefficient: float = 1.0 / 32
    arip_coefficient: float = 0.1
    l1_coefficient: float = 0.01
    arip_support_multiplier: int = 2
    aux_k: int | None = None
    probe_seed: int = 0


@dataclass
class ISAEMETrainingSAEConfig(ISAETrainingSAEConfig):
    """Training config of ``isae_me``: adds ``encoder_steps`` (T, default 5) and ``step_matrix_rank``."""

    ARCHITECTURE = "isae_me"
    encoder_steps: int = 5
    step_matrix_rank: int | None = None


# ----------------------------------------------------------------------------------------------- model mixins


class UnitSphereMixin:
    """Per-sample centring + unit norm through SAELens's ``run_time_activation_norm_fn_in/out`` hooks (exact undo)."""

    cfg: Any

    def _setup_activation_normalization(self) -> None:
        self._sphere = SphereStatistics()
        self.run_time_activation_norm_fn_in = self._sphere.apply
        self.run_time_activation_norm_fn_out = self._sphere.undo

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """No weight changes: the SAE maps ``c·x`` to ``c·x̂(x)``, so a global input scale is already folded."""
        self.cfg.normalize_activations = "none"

    def fold_activation_whitening(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("covariance whitening cannot be folded through the per-sample normalisation")


class ISAEWeightsMixin:
    """Spec §1.4: ``W_dec`` rows ~ N(0, I) normalised, ``W_enc = W_decᵀ``, ``b_dec = 0``, no encoder bias; the
    core encoder as :meth:`codes`."""

    cfg: Any
    dtype: torch.dtype
    device: torch.device
    W_dec: nn.Parameter

    def initialize_weights(self) -> None:
        d_in, d_sae = self.cfg.d_in, self.cfg.d_sae
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=self.dtype, device=self.device))
        self.W_dec = nn.Parameter(gaussian_unit_atoms(d_sae, d_in, dtype=self.dtype, device=self.device))
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone().contiguous())
        self.register_buffer("b_enc", torch.zeros(d_sae, dtype=self.dtype, device=self.device))

    def _is_meta(self) -> bool:
        return self.W_dec.device.type == "meta"

    def step_factor(self) -> StepFactor | None:
        return None

    def encoder_steps(self) -> int:
        return int(getattr(self.cfg, "encoder_steps", 1))

    def codes(self, x: Tensor, support: int = 0) -> Codes:
        """Sparse codes of raw inputs through the core encoder (with the SAELens input hooks); ``support > k`` also
        returns the top-``support`` last-step pre-activation indices (the aRIP support, spec §4)."""
        sae_in = self.process_sae_in(x)  # type: ignore[attr-defined]
        pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)  # type: ignore[attr-defined]
        return multistep_encode(pre, self.cfg.k, self.encoder_steps(), self.step_factor(), support=support)


class MultistepMixin(ISAEWeightsMixin):
    """iSAE-ME (Eq. 10): the learned ``F`` with the ISTA init (spec §2) and the multistep ``encode``."""

    hook_sae_acts_pre: Any
    hook_sae_acts_post: Any

    def initialize_weights(self) -> None:
        super().initialize_weights()
        d_sae, rank = self.cfg.d_sae, self.cfg.step_matrix_rank
        meta = self._is_meta()
        if rank is None:
            full = self.W_dec.new_empty(d_sae, d_sae) if meta else ista_step_factor(self.W_dec.detach())
            self.W_step = nn.Parameter(full)
        else:
            factors = (self.W_dec.new_empty(d_sae, rank),) * 2 if meta else \
                ista_step_factor_low_rank(self.W_dec.detach(), rank)
            self.W_step_left, self.W_step_right = (nn.Parameter(f.clone()) for f in factors)

    def step_factor(self) -> StepFactor:
        if self.cfg.step_matrix_rank is None:
            return StepFactor(full=self.W_step)
        return StepFactor(left=self.W_step_left, right=self.W_step_right)

    def encode(self, x: Tensor) -> Tensor:
        return self.hook_sae_acts_post(self.codes(x).dense())

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        codes = self.codes(x)
        return self.hook_sae_acts_post(codes.dense()), codes.pre


class ISAETrainingMixin:
    """The recipe's training forward (spec Summary) on top of the SAELens training class."""

    cfg: Any
    W_enc: Tensor
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    data_initialised: Tensor
    mse_variance: Tensor

    def initialize_weights(self) -> None:
        super().initialize_weights()  # type: ignore[misc]
        self.register_buffer("data_initialised", torch.zeros((), device=self.W_dec.device))
        self.register_buffer("mse_variance", torch.ones((), dtype=self.W_dec.dtype, device=self.W_dec.device))

    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {"arip": self.cfg.arip_coefficient, "l1": self.cfg.l1_coefficient}

    def hyperparameters(self, coefficients: dict[str, float] | None = None) -> ISAEHyperparameters:
        coefficients = coefficients or {}
        cfg = self.cfg
        return ISAEHyperparameters(
            k=cfg.k, n_steps=self.encoder_steps(), signed=True,  # type: ignore[attr-defined]
            arip_coefficient=coefficients.get("arip", cfg.arip_coefficient),
            l1_coefficient=coefficients.get("l1", cfg.l1_coefficient),
            aux_coefficient=cfg.aux_loss_coefficient, aux_k=cfg.aux_k, support_multiplier=cfg.arip_support_multiplier)

    def isae_parameters(self) -> ISAEParameters:
        return ISAEParameters(self.W_enc, self.W_dec, self.b_dec, self.step_factor())  # type: ignore[attr-defined]

    @torch.no_grad()
    def initialise_from_batch(self, x_n: Tensor) -> None:
        """Spec §1.3, §1.6: ``b`` = geometric median of the normalised batch, σ² = its per-element variance."""
        self.b_dec.copy_(geometric_median(x_n))
        self.mse_variance.fill_(float(batch_variance(x_n)))
        self.data_initialised.fill_(1.0)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        check_activations(step_input.sae_in, self.cfg.d_in)
        unit_rows(self.W_dec.data)
        x_n, mean, norm = unit_sphere(step_input.sae_in.to(self.W_dec.dtype))
        if not bool(self.data_initialised):
            self.initialise_from_batch(x_n)
        out = isae_forward(
            x_n, self.isae_parameters(), self.hyperparameters(step_input.coefficients), mse_variance=self.mse_variance,
            dead=step_input.dead_neuron_mask, probe_seed=self.cfg.probe_seed, step=step_input.n_training_steps)
        with torch.no_grad():  # the trainer only counts firings on these
            feature_acts = out.codes.dense()
        return TrainStepOutput(
            sae_in=step_input.sae_in, sae_out=undo_unit_sphere(out.reconstruction, mean, norm),
            feature_acts=feature_acts, hidden_pre=out.codes.pre, loss=out.loss, losses=out.losses)

    def save_inference_model(self, path: str | Path) -> tuple[Path, Path]:
        """Export the model the next training forward would use (unit ``W_dec`` rows), without training buffers."""
        unit_rows(self.W_dec.data)
        return super().save_inference_model(path)  # type: ignore[misc]

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        for name in TRAINING_BUFFERS:
            state_dict.pop(name, None)
        super().process_state_dict_for_saving_inference(state_dict)  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------- classes


class ISAESAE(UnitSphereMixin, ISAEWeightsMixin, AbsTopKSAE):
    """Inference ``isae``: SAELens's ``AbsTopKSAE`` on centred unit-norm inputs, undone after decoding."""


class ISAEMESAE(UnitSphereMixin, MultistepMixin, AbsTopKSAE):
    """Inference ``isae_me``: the multistep AbsTopK encoder (T steps, learned ``F``)."""


class ISAETrainingSAE(ISAETrainingMixin, UnitSphereMixin, ISAEWeightsMixin, AbsTopKTrainingSAE):
    """Training ``isae`` (AbsTopK + aRIP + paper AuxK, optional L1)."""


class ISAEMETrainingSAE(ISAETrainingMixin, UnitSphereMixin, MultistepMixin, AbsTopKTrainingSAE):
    """Training ``isae_me`` (iSAE + multistep encoder)."""


ISAE_FAMILIES: dict[str, Family] = {
    "isae": Family(ISAESAEConfig, ISAESAE, ISAETrainingSAEConfig, ISAETrainingSAE, "abstopk"),
    "isae_me": Family(ISAEMESAEConfig, ISAEMESAE, ISAEMETrainingSAEConfig, ISAEMETrainingSAE, "abstopk"),
    "aligned_isae": _aligned_family("aligned_isae", "ISAE", "isae", (ISAESAEConfig, ISAESAE),
                                    (ISAETrainingSAEConfig, ISAETrainingSAE), ISAESAEConfig),
}
