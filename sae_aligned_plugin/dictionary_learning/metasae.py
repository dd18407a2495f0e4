"""MetaSAE joint training for dictionary_learning 0.1.x (spec ``shared/papers/metasae.md``).

* :class:`MetaSAETrainer` is the library's ``BatchTopKTrainer`` (its loss, Adam, decoder projection and
  renormalisation, AuxK, threshold) plus the decomposability penalty ``λ2 · mean_i p_i`` in the loss and the
  alternating meta phase (``n_meta_steps`` meta steps before every ``n_primary_steps``-th primary step, own Adam).
  :class:`AlignedMetaSAETrainer` is the same on :class:`~sae_aligned_plugin.dictionary_learning.AlignedBatchTopKTrainer`.
* The dictionaries (:class:`MetaBatchTopKSAE`, :class:`AlignedMetaBatchTopKSAE`) are the library's / our aligned
  ``BatchTopKSAE`` carrying the meta SAE as the submodule ``meta_sae``, so ``trainSAE``'s ``ae.pt`` holds it and
  :func:`~sae_aligned_plugin.dictionary_learning.load_dictionary` restores both. The meta's Adam state and the step
  counters stay in the trainer (``trainer.meta_critic``; dictionary_learning does not resume training).

Trainer keywords: the base trainer's plus the MetaSAE fields (``lambda2``, ``sigma_sq``, ``meta_d_sae``, ``meta_k``,
``n_primary_steps``, ``n_meta_steps``, ``meta_lr``, ...; names and defaults of
:class:`~sae_aligned_plugin.core.metasae.MetaSAEConfig`), all recorded in ``trainer.config``.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, ClassVar

import torch
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE, BatchTopKTrainer
from torch import Tensor, nn

from sae_aligned_plugin.core.metasae import METASAE_FIELDS, MetaCritic, MetaSAE, MetaSAEConfig, loss_scale
from sae_aligned_plugin.dictionary_learning.dictionaries import AlignedBatchTopKSAE
from sae_aligned_plugin.dictionary_learning.loader import load_state_dict_strict, read_state_dict
from sae_aligned_plugin.dictionary_learning.trainers import AlignedBatchTopKTrainer
from sae_aligned_plugin.validation import check_activations


class _MetaDictionary:
    """A BatchTopK dictionary ``(activation_dim, dict_size, k)`` that also owns the meta SAE (``meta_sae``).

    ``metasae`` (the trainer passes it) fixes every meta hyperparameter; without it (loading) the meta is built
    from ``meta_d_sae`` and ``meta_k`` with the other fields at their defaults. The meta draws from its own seeded
    generator, so the dictionary's own init is the base class's.
    """

    activation_dim: int
    dict_size: int

    def __init__(self, activation_dim: int, dict_size: int, k: int, meta_d_sae: int | None = None,
                 meta_k: float = 8.0, *, metasae: MetaSAEConfig | None = None) -> None:
        super().__init__(activation_dim, dict_size, k)  # type: ignore[call-arg]
        config = metasae or MetaSAEConfig(n_latents=dict_size, d_in=activation_dim, meta_d_sae=meta_d_sae,
                                          meta_k=meta_k)
        self.meta_sae = MetaSAE.from_config(config)

    def decoder_rows(self) -> Tensor:
        """Decoder rows ``[F, d]`` (the library stores ``decoder.weight`` as ``[d, F]``)."""
        return self.decoder.weight.T  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls, path: str | Path, k: int | None = None, device: str | torch.device | None = None,
                        meta_k: float = 8.0, **_: Any) -> Any:
        """Load an ``ae.pt`` (``torch.load(weights_only=True)``); sizes and ``k`` come from the tensors."""
        state = read_state_dict(path)
        activation_dim, dict_size = state["decoder.weight"].shape
        stored_k = int(state["k"])
        if k is not None and k != stored_k:
            raise ValueError(f"k={k} was requested but the checkpoint stores k={stored_k}")
        model = cls(activation_dim, dict_size, stored_k, state["meta_sae.W_enc"].shape[1], meta_k)
        load_state_dict_strict(model, state, cls.__name__)
        return model.to(device)


class MetaBatchTopKSAE(_MetaDictionary, BatchTopKSAE):
    """``BatchTopKSAE`` with the meta SAE attached (``MetaSAETrainer``)."""


class AlignedMetaBatchTopKSAE(_MetaDictionary, AlignedBatchTopKSAE):
    """Aligned ``BatchTopKSAE`` with the meta SAE attached (``AlignedMetaSAETrainer``)."""


_BATCHTOPK_ARGUMENTS = list(inspect.signature(BatchTopKTrainer.__init__).parameters)[1:]  # steps, activation_dim, ...


class _MetaSAETrainerMixin:
    """Penalty in ``loss``, meta phase in ``update``, MetaSAE fields in ``config``. Put it before the host trainer.

    The meta parameters are in the host's ``Adam(ae.parameters())`` but never get a ``.grad`` (the penalty reads the
    meta under ``no_grad``; the meta step uses ``torch.autograd.grad``), so only the meta's own Adam moves them.
    """

    DICTIONARY: ClassVar[type[nn.Module]]
    ae: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        meta_fields = {name: kwargs.pop(name) for name in METASAE_FIELDS if name in kwargs}
        given = {**dict(zip(_BATCHTOPK_ARGUMENTS, args)), **kwargs}
        self.metasae_config = MetaSAEConfig(n_latents=given["dict_size"], d_in=given["activation_dim"], **meta_fields)
        # the projected-alignment ablation trains the library's free encoder
        dictionary = MetaBatchTopKSAE if kwargs.get("alignment") == "projected" else self.DICTIONARY
        kwargs.setdefault("dict_class", functools.partial(dictionary, metasae=self.metasae_config))
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.meta_critic = MetaCritic(self.metasae_config, sae=self.ae.meta_sae).to(self.ae.decoder.weight.device)

    def update(self, step: int, activations: Tensor) -> Any:
        """Check the batch, run the meta phase if due (before this primary step), then the host's update."""
        check_activations(activations, self.ae.activation_dim)
        self.meta_critic.before_primary_step(self.ae.decoder_rows())
        return super().update(step, activations)  # type: ignore[misc]

    def loss(self, x: Tensor, step: int | None = None, logging: bool = False, **kwargs: Any) -> Any:
        """The host's loss plus ``λ2 · loss_scale(x) · mean_i p_i`` (the library's l2 loss sums over ``d``, see
        :func:`~sae_aligned_plugin.core.metasae.loss_scale`); with ``logging`` the penalty terms join ``losses``."""
        out = super().loss(x, step=step, logging=logging, **kwargs)  # type: ignore[misc]
        penalty = self.meta_critic.penalty(self.ae.decoder_rows(), loss_scale(x))
        if not logging:
            return out + penalty.loss.to(out.dtype)
        extra = {"decomposability_penalty": penalty.loss.item(), "loss": out.losses["loss"] + penalty.loss.item()}
        extra.update({name.split("/")[-1]: float(value) for name, value in self.meta_critic.metrics().items()})
        return out._replace(losses={**out.losses, **extra})

    @property
    def config(self) -> dict[str, Any]:
        meta = {name: getattr(self.metasae_config, name) for name in METASAE_FIELDS}
        return {**super().config, "trainer_class": type(self).__name__, "dict_class": type(self.ae).__name__,  # type: ignore[misc]
                **meta}


class MetaSAETrainer(_MetaSAETrainerMixin, BatchTopKTrainer):
    """``BatchTopKTrainer`` + MetaSAE joint training, on :class:`MetaBatchTopKSAE`."""

    DICTIONARY = MetaBatchTopKSAE


class AlignedMetaSAETrainer(_MetaSAETrainerMixin, AlignedBatchTopKTrainer):
    """``AlignedBatchTopKTrainer`` + MetaSAE joint training, on :class:`AlignedMetaBatchTopKSAE`."""

    DICTIONARY = AlignedMetaBatchTopKSAE
