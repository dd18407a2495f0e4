"""MetaSAE joint training as SAELens architectures (spec ``shared/papers/metasae.md``).

``metasae_batchtopk`` / ``metasae_topk`` are SAELens's ``batchtopk`` / ``topk`` with a meta SAE inside the
training SAE (submodule ``meta_critic``: :class:`~sae_aligned_plugin.core.metasae.MetaCritic`) and the
decomposability penalty ``λ2 · s · mean_i p_i`` added to the loss (``losses["decomposability_penalty"]``; ``s`` =
:func:`~sae_aligned_plugin.core.metasae.loss_scale` of the batch puts λ2 in the paper's units).
``aligned_metasae_batchtopk`` composes the same mixins with ``aligned_batchtopk``. SAELens's own trainer and
runners train them; nothing else changes:

* **Meta step inside the forward pass.** ``SAETrainer`` has one Adam over ``sae.parameters()`` and no hook after
  its step, so the meta phase (``n_meta_steps`` steps, its own Adam) runs at the start of
  ``training_forward_pass`` every ``n_primary_steps`` primary steps, on the decoder the previous primary step left.
  The meta parameters are in ``sae.parameters()`` (so ``.to()``, checkpoints and loading just work) but never
  get a ``.grad``: the penalty reads the meta under ``no_grad`` and the meta step uses ``torch.autograd.grad``.
  Adam skips parameters without a gradient, so the trainer's Adam never moves them (and keeps no state for them).
* **Checkpoints** (``save_model``) hold the meta SAE, its Adam state and both step counters (``meta_critic.*``);
  ``TrainingSAE.load_from_disk`` restores them exactly, so training resumes bit for bit.
* **Export** (``save_inference_model(path)``) writes the primary alone in SAELens's plain format (the BatchTopK
  family as ``jumprelu``, TopK as ``topk``; ``SAE.load_from_disk(path)`` needs no plugin) and the meta SAE as its
  own SAELens folder ``path/meta_sae/``: a ``jumprelu`` SAE with ``normalize_activations="layer_norm"`` (the meta's
  per-row standardisation) whose threshold is the EMA of the smallest kept BatchTopK code, to be applied to the
  primary's unit-normalised decoder rows. Load it with ``SAE.load_from_disk(path / "meta_sae")``; publish it as a
  second ``sae_id`` (SAELens's uploader copies only the four top-level files of a folder).
* **Logged metrics** (SAELens log steps): ``metasae/mean_p``, ``metasae/row_sq_error``, ``metasae/meta_mse``,
  ``metasae/meta_aux_loss``, ``metasae/meta_dead_fraction``, ``metasae/meta_steps``; histogram ``weights/metasae_p``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import SAEConfig, SAEMetadata, TrainStepInput, TrainStepOutput
from torch import Tensor, nn

from sae_aligned_plugin.core.metasae import (
    METASAE_FIELDS,
    MetaCritic,
    MetaSAE,
    MetaSAEConfig,
    decomposability_penalty,
    loss_scale,
    unit_rows,
)
from sae_aligned_plugin.saelens.aligned import ALIGNED_FAMILIES, AlignedConfigMixin
from sae_aligned_plugin.saelens.aligned import BatchTopKInferenceSAE  # type: ignore[attr-defined]  (made by _subclass)
from sae_aligned_plugin.saelens.registry import Family
from sae_aligned_plugin.validation import check_activations

META_SAE_FOLDER = "meta_sae"
CRITIC_PREFIX = "meta_critic."

_HINTS = typing.get_type_hints(MetaSAEConfig)
_MetaSAEFields = dataclasses.make_dataclass(  # the core config's fields, names, types and defaults (one source)
    "_MetaSAEFields",
    [(f.name, _HINTS[f.name], dataclasses.field(default=f.default)) for f in dataclasses.fields(MetaSAEConfig)
     if f.name in METASAE_FIELDS],
    kw_only=True,
)
_MetaSAEFields.__module__ = __name__


class MetaSAEConfigMixin(_MetaSAEFields):  # type: ignore[misc,valid-type]
    """Config side: the MetaSAE fields (names and defaults of :class:`MetaSAEConfig`, generated from it) and their
    validation; ``meta_d_sae=None`` becomes the paper's ≈ 9 % of ``d_sae`` before SAELens records the metadata."""

    d_sae: int
    d_in: int

    def __post_init__(self) -> None:
        self.meta_d_sae = self.metasae_config().meta_d_sae  # validates (ConfigError) and resolves the default
        super().__post_init__()  # type: ignore[misc]

    def metasae_config(self) -> MetaSAEConfig:
        return MetaSAEConfig(n_latents=self.d_sae, d_in=self.d_in,
                             **{name: getattr(self, name) for name in METASAE_FIELDS})


@torch.no_grad()
def meta_sae_to_saelens(meta: MetaSAE, *, primary_architecture: str, primary_d_sae: int, model_name: str | None,
                        hook_name: str | None, meta_steps_trained: int | None, dtype: str = "float32") -> JumpReLUSAE:
    """A trained meta SAE as a SAELens ``jumprelu`` SAE: ``layer_norm`` input normalisation (the meta's per-row
    standardisation), no encoder bias, and the EMA of the smallest kept BatchTopK code as every latent's threshold
    (SAELens's own convention for exporting BatchTopK). Its input is the primary's unit-norm decoder rows."""
    cfg = JumpReLUSAEConfig(
        d_in=meta.d_in, d_sae=meta.d_sae, dtype=dtype, device=str(meta.W_dec.device),
        normalize_activations="layer_norm",
        metadata=SAEMetadata(
            model_name=model_name, hook_name=hook_name, meta_sae_of=primary_architecture,
            primary_d_sae=primary_d_sae, meta_k=meta.k, meta_steps_trained=meta_steps_trained,
            input="unit-norm decoder rows W_dec[i]/||W_dec[i]|| of the primary SAE in the parent folder",
            selection="trained with BatchTopK over all rows; exported as JumpReLU with the EMA threshold"),
    )
    sae = JumpReLUSAE(cfg)
    sae.load_state_dict({"W_enc": meta.W_enc, "W_dec": meta.W_dec, "b_dec": meta.b_dec,
                         "b_enc": torch.zeros_like(meta.W_enc[0]),
                         "threshold": meta.threshold.clamp_min(0).expand(meta.d_sae).clone()})
    return sae


class MetaSAETrainingMixin:
    """Model side: owns the :class:`MetaCritic`, runs its schedule, adds the penalty, strips it on export."""

    cfg: Any
    W_dec: nn.Parameter
    meta_critic: MetaCritic

    def __init__(self, cfg: Any, use_error_term: bool = False) -> None:
        super().__init__(cfg, use_error_term)  # type: ignore[call-arg]
        # Built after the primary's init, from its own seeded generator: with the same seed the primary starts (and,
        # at lambda2 = 0, trains) exactly as the solo architecture.
        self.meta_critic = MetaCritic(cfg.metasae_config()).to(device=self.device, dtype=self.dtype)  # type: ignore[attr-defined]

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        check_activations(step_input.sae_in, self.cfg.d_in)  # before the meta phase: a bad batch changes nothing
        if self.training:  # type: ignore[attr-defined]
            self.meta_critic.before_primary_step(self.W_dec)
        output = super().training_forward_pass(step_input)  # type: ignore[misc]
        if step_input.is_logging_step:
            output.metrics.update(self.meta_critic.metrics())
        return output

    def calculate_aux_loss(self, step_input: TrainStepInput, feature_acts: Tensor, hidden_pre: Tensor,
                           sae_out: Tensor) -> dict[str, Tensor]:
        """The base's auxiliary losses plus ``decomposability_penalty = λ2 · s · mean_i p_i`` (spec §2.1), with
        ``s = loss_scale(sae_in)``: SAELens's ``mse_loss`` sums over ``d_in`` in the input's units, the paper's is a
        per-element mean on standardised tokens, so ``s`` keeps λ2 at the paper's weight."""
        base = super().calculate_aux_loss(step_input=step_input, feature_acts=feature_acts,  # type: ignore[misc]
                                          hidden_pre=hidden_pre, sae_out=sae_out)
        losses = dict(base) if isinstance(base, dict) else {"auxiliary_reconstruction_loss": base}
        penalty = self.meta_critic.penalty(self.W_dec, loss_scale(step_input.sae_in))
        losses["decomposability_penalty"] = penalty.loss.to(sae_out.dtype)
        return losses

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        """The export is the primary alone: drop ``meta_critic.*`` (saved beside it by :meth:`save_inference_model`)."""
        for key in [k for k in state_dict if k.startswith(CRITIC_PREFIX)]:
            del state_dict[key]
        super().process_state_dict_for_saving_inference(state_dict)  # type: ignore[misc]

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        """SAELens's loader casts every tensor to ``cfg.dtype``; give the critic's counters their int64 back."""
        reference = self.meta_critic.state_dict()
        for key, tensor in reference.items():
            full = CRITIC_PREFIX + key
            if not tensor.is_floating_point() and full in state_dict:
                state_dict[full] = state_dict[full].to(tensor.dtype)
        super().process_state_dict_for_loading(state_dict)  # type: ignore[misc]

    def save_inference_model(self, path: str | Path) -> tuple[Path, Path]:
        """The primary's plain SAELens export in ``path`` and the meta SAE's in ``path/meta_sae``."""
        paths = super().save_inference_model(path)  # type: ignore[misc]
        self.meta_sae_as_saelens().save_model(Path(path) / META_SAE_FOLDER)
        return paths

    def meta_sae_as_saelens(self) -> JumpReLUSAE:
        """The meta SAE as a SAELens ``jumprelu`` SAE over unit-norm decoder rows (see the module docstring)."""
        return meta_sae_to_saelens(self.meta_critic.sae, primary_architecture=self.cfg.architecture(),
                                   primary_d_sae=self.cfg.d_sae, model_name=self.cfg.metadata.model_name,
                                   hook_name=self.cfg.metadata.hook_name,
                                   meta_steps_trained=int(self.meta_critic.meta_step), dtype=self.cfg.dtype)

    @torch.no_grad()
    def log_histograms(self) -> dict[str, NDArray[np.generic]]:
        rows = unit_rows(self.W_dec.float())
        p, _ = decomposability_penalty(rows, self.meta_critic.sae(rows.to(self.W_dec.dtype)).float(),
                                       self.meta_critic.config.sigma_sq)
        return {**super().log_histograms(), "weights/metasae_p": p.cpu().numpy()}  # type: ignore[misc]


class MetaCheckpointGuard:
    """Inference class of ``metasae_topk``: refuses a *training* checkpoint (it carries ``meta_critic.*``)."""

    CHECKPOINT_KEY: ClassVar[str] = CRITIC_PREFIX

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        if any(key.startswith(self.CHECKPOINT_KEY) for key in state_dict):
            raise ValueError(
                f"this is a training checkpoint of {self.cfg.architecture()!r} (it holds the meta SAE): load it with "  # type: ignore[attr-defined]
                "TrainingSAE.load_from_disk, or export it with save_inference_model and load that with SAE"
            )
        super().process_state_dict_for_loading(state_dict)  # type: ignore[misc]


def _named(name: str, bases: tuple[type, ...], *, dataclass: bool = False, **namespace: Any) -> type:
    """A named, module-level (so picklable) class; ``dataclass=True`` regenerates ``__init__`` over all fields."""
    cls = type(name, bases, {"__module__": __name__, "__qualname__": name, **namespace})
    if dataclass:
        cls = dataclasses.dataclass(kw_only=True)(cls)
    globals()[name] = cls
    return cls


def _metasae_family(architecture: str, stem: str, base: str, inference: tuple[type, type],
                    training: tuple[type, type], export_config: type[SAEConfig]) -> Family:
    """Inference config + SAE (export / refusal only) and training config + SAE for one MetaSAE architecture."""
    inference_cfg_base, inference_sae = inference
    training_cfg_base, training_sae_base = training
    config_mixins = (MetaSAEConfigMixin,) if issubclass(training_cfg_base, AlignedConfigMixin) else (
        MetaSAEConfigMixin, AlignedConfigMixin)
    return Family(
        _named(f"{stem}SAEConfig", (AlignedConfigMixin, inference_cfg_base), ARCHITECTURE=architecture,
               EXPORT_CONFIG=inference_cfg_base),
        inference_sae,
        _named(f"{stem}TrainingSAEConfig", (*config_mixins, training_cfg_base), dataclass=True,
               ARCHITECTURE=architecture, EXPORT_CONFIG=export_config),
        _named(f"{stem}TrainingSAE", (MetaSAETrainingMixin, training_sae_base)),
        base,
    )


_ALIGNED_BATCHTOPK = ALIGNED_FAMILIES["aligned_batchtopk"]

METASAE_FAMILIES: dict[str, Family] = {
    "metasae_batchtopk": _metasae_family(
        "metasae_batchtopk", "MetaSAEBatchTopK", "batchtopk", (JumpReLUSAEConfig, BatchTopKInferenceSAE),
        (BatchTopKTrainingSAEConfig, BatchTopKTrainingSAE), JumpReLUSAEConfig),
    "metasae_topk": _metasae_family(
        "metasae_topk", "MetaSAETopK", "topk", (TopKSAEConfig, _named("MetaSAETopKSAE", (MetaCheckpointGuard, TopKSAE))),
        (TopKTrainingSAEConfig, TopKTrainingSAE), TopKSAEConfig),
    "aligned_metasae_batchtopk": _metasae_family(
        "aligned_metasae_batchtopk", "AlignedMetaSAEBatchTopK", "aligned_batchtopk",
        (JumpReLUSAEConfig, _ALIGNED_BATCHTOPK.sae),
        (_ALIGNED_BATCHTOPK.training_config, _ALIGNED_BATCHTOPK.training_sae), JumpReLUSAEConfig),
}
