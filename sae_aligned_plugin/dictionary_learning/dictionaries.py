"""Aligned dictionary_learning dictionaries: the library's classes with ``encoder.weight := E(D, U)`` (spec §3, §5).

Each class subclasses the library's own dictionary and replaces only its ``encoder`` ``nn.Linear`` with
:class:`AlignedLinearEncoder`, which holds the free tensor ``U`` (``encoder.weight_free``, ``[F, d]`` like the
encoder weight it replaces, 0 at init, spec §4) and the base's encoder bias. Its ``weight`` is derived from the
decoder columns on every access, in fp32::

    e_i = d_i/||d_i||² + (I − d̂_i d̂_iᵀ) u_i        so ⟨e_i, d_i⟩ = 1 for every feature i.

Everything else is the library's: ``encode``/``decode``/``forward``, TopK/BatchTopK selection and thresholds,
``scale_biases``, the decoder ``nn.Linear`` (so ``ConstrainedAdam``, ``set_decoder_norm_to_unit_norm`` and
``remove_gradient_parallel_to_decoder_directions`` act on it and see its total gradient, including the path
through ``E``), and the parameter order (so optimiser-state indices used by ``resample_neurons`` still match).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from dictionary_learning.dictionary import AutoEncoder
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
from dictionary_learning.trainers.top_k import AutoEncoderTopK
from torch import Tensor, nn

from sae_aligned_plugin.core.aligned import aligned_encoder, alignment_scores
from sae_aligned_plugin.dictionary_learning.loader import load_state_dict_strict, read_state_dict


class AlignedLinearEncoder(nn.Module):
    """``x ↦ E x + b_enc`` with ``E = aligned_encoder(Dᵀ, U)`` (spec §3.1); a drop-in for the encoder ``nn.Linear``.

    ``decoder`` is the owning dictionary's decoder ``nn.Linear`` (``weight [d, F]``). It is referenced, not
    registered, so ``decoder.weight`` stays a single parameter owned by the dictionary.
    """

    def __init__(self, decoder: nn.Linear, bias: nn.Parameter) -> None:
        super().__init__()
        self.in_features, self.out_features = decoder.out_features, decoder.in_features
        self.weight_free = nn.Parameter(torch.zeros_like(decoder.weight.detach().T))  # U = 0 (spec §4)
        self.bias = bias
        self.__dict__["_decoder"] = decoder  # bypasses nn.Module registration on purpose

    @property
    def weight(self) -> Tensor:
        """Encoder rows ``[F, d]`` in fp32, differentiable w.r.t. both ``U`` and the decoder (spec §3.1)."""
        return aligned_encoder(self._decoder.weight.T, self.weight_free)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(self.weight_free.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, aligned=True"


class AlignedDictionaryMixin:
    """Shared part of the aligned dictionaries: encoder swap, encoder rows, alignment scores and safe loading."""

    USES_K: ClassVar[bool] = False
    encoder: AlignedLinearEncoder
    decoder: nn.Linear

    def _align_encoder(self) -> None:
        """Swap the base encoder for the aligned one, keeping the base's encoder bias and module position."""
        self.encoder = AlignedLinearEncoder(self.decoder, self.encoder.bias)

    def encoder_weight(self) -> Tensor:
        """Derived encoder rows ``e_i`` as ``[F, d]`` fp32 (keeps the autograd graph; wrap in ``no_grad`` to read)."""
        return self.encoder.weight

    @torch.no_grad()
    def alignment_scores(self) -> Tensor:
        """``a_i = ⟨e_i, d_i⟩`` per feature (spec §2); ≡ 1 up to fp32 rounding."""
        return alignment_scores(self.encoder_weight(), self.decoder.weight.T)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor], k: int | None = None) -> Any:
        """Build from a state dict; shapes come from ``encoder.weight_free`` and ``k`` from the ``k`` buffer."""
        free = state_dict.get("encoder.weight_free")
        if not isinstance(free, Tensor) or free.ndim != 2:
            raise ValueError(f"not a {cls.__name__} state dict: no 2-D 'encoder.weight_free' (keys: {sorted(state_dict)})")
        dict_size, activation_dim = free.shape
        args: tuple[int, ...] = (activation_dim, dict_size)
        if cls.USES_K:
            stored = int(state_dict["k"]) if "k" in state_dict else None
            if k is not None and stored is not None and k != stored:
                raise ValueError(f"k={k} was requested but the checkpoint stores k={stored}")
            if k is None and stored is None:
                raise ValueError(f"{cls.__name__} needs k: pass k= or load a checkpoint with a 'k' buffer")
            args += (k if k is not None else stored,)
        elif k is not None:
            raise ValueError(f"{cls.__name__} has no k (got k={k})")
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; leave the caller's RNG alone
            model = cls(*args)
        load_state_dict_strict(model, state_dict, cls.__name__)  # type: ignore[arg-type]
        return model

    @classmethod
    def from_pretrained(cls, path: str | Path, k: int | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, **_: Any) -> Any:
        """Load an ``ae.pt`` state dict with ``torch.load(weights_only=True)``; see :meth:`from_state_dict`."""
        return cls.from_state_dict(read_state_dict(path), k=k).to(device=device, dtype=dtype)


class AlignedAutoEncoder(AlignedDictionaryMixin, AutoEncoder):
    """``AutoEncoder`` (ReLU; StandardTrainer, PAnnealTrainer) with aligned encoder rows.

    Same random draws as the base; the decoder columns are then unit-normalised (spec §4 defaults) instead of the
    base's norm 0.1, so ``U = 0`` gives ``E = Dᵀ``. The pre-bias (0) and the base's encoder bias are kept.
    """

    def __init__(self, activation_dim: int, dict_size: int) -> None:
        super().__init__(activation_dim, dict_size)
        with torch.no_grad():
            self.decoder.weight /= self.decoder.weight.norm(dim=0, keepdim=True)
        self._align_encoder()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit decoder columns via the rescaling symmetry (spec §2, check 5): ``(U, b_enc, d_i) → (cU, c b_enc, d_i/c)``.

        ``E(D/c, cU) = c·E(D, U)``, so the features scale by ``c`` and the reconstruction is unchanged.
        """
        norms = self.decoder.weight.norm(dim=0)
        self.decoder.weight /= norms
        self.encoder.weight_free *= norms[:, None]
        self.encoder.bias *= norms


class _AlignedKDictionary(AlignedDictionaryMixin):
    """TopK-family constructor ``(activation_dim, dict_size, k)``: the base's tied unit-norm init, then ``U = 0``.

    At init the encoder therefore equals the base's (``E = Dᵀ``), so the first forward pass is the base's.
    """

    USES_K = True

    def __init__(self, activation_dim: int, dict_size: int, k: int) -> None:
        super().__init__(activation_dim, dict_size, k)  # type: ignore[call-arg]
        self._align_encoder()


class AlignedAutoEncoderTopK(_AlignedKDictionary, AutoEncoderTopK):
    """``AutoEncoderTopK`` (TopKTrainer) with aligned encoder rows."""


class AlignedBatchTopKSAE(_AlignedKDictionary, BatchTopKSAE):
    """``BatchTopKSAE`` (BatchTopKTrainer) with aligned encoder rows."""
