"""Encoder and decoder rows (one row per feature) from any supported SAE, by duck typing.

Spec ``shared/papers/aligned_training.md`` §1 (layouts): SAELens and the ``W_enc``/``W_dec`` parameter classes of
dictionary_learning store ``W_enc [d, F]`` and ``W_dec [F, d]``; dictionary_learning's ``nn.Linear`` classes store
``encoder.weight [F, d]`` and ``decoder.weight [d, F]``. Everything here returns rows ``[F, d]``: ``e_i`` and ``d_i``.
No SAELens / dictionary_learning import: only attributes are inspected.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# What encoder_decoder_rows looks for, in this order (also the text of its TypeError).
_LOOKED_FOR = (
    "a method `encoder_weight()` returning [F, d] plus `decoder.weight` [d, F] or `W_dec` [F, d] "
    "(plugin aligned dictionaries); `W_enc` [d, F] and `W_dec` [F, d] (SAELens SAEs, dictionary_learning "
    "JumpReluAutoEncoder / MatryoshkaBatchTopKSAE); `encoder.weight` [F, d] and `decoder.weight` [d, F] "
    "(dictionary_learning AutoEncoder, AutoEncoderNew, AutoEncoderTopK, BatchTopKSAE, GatedAutoEncoder)"
)


def _linear_weight(model: Any, name: str) -> Tensor | None:
    """``model.<name>.weight`` if ``model.<name>`` is a module-like object holding a tensor ``weight``."""
    weight = getattr(getattr(model, name, None), "weight", None)
    return weight if isinstance(weight, Tensor) else None


def _tensor_attr(model: Any, name: str) -> Tensor | None:
    value = getattr(model, name, None)
    return value if isinstance(value, Tensor) else None


def _raw_rows(model: Any) -> tuple[Tensor, Tensor] | None:
    """(encoder rows, decoder rows) in the model's own dtype, or ``None`` if no known layout matches."""
    encoder_weight = getattr(model, "encoder_weight", None)
    if callable(encoder_weight):
        decoder_linear = _linear_weight(model, "decoder")
        decoder = decoder_linear.T if decoder_linear is not None else _tensor_attr(model, "W_dec")
        if decoder is not None:
            return encoder_weight(), decoder
    w_enc, w_dec = _tensor_attr(model, "W_enc"), _tensor_attr(model, "W_dec")
    if w_enc is not None and w_dec is not None:
        return w_enc.T, w_dec
    enc_linear, dec_linear = _linear_weight(model, "encoder"), _linear_weight(model, "decoder")
    if enc_linear is not None and dec_linear is not None:
        return enc_linear, dec_linear.T
    return None


@torch.no_grad()
def encoder_decoder_rows(model: Any) -> tuple[Tensor, Tensor]:
    """Encoder rows ``e_i`` and decoder rows ``d_i`` of ``model``, both ``[F, d]``, detached, fp32.

    The tensors stay on the model's device (call ``.cpu()`` for numpy). They may share storage with the model's
    fp32 parameters: do not modify them in place. For ``GatedAutoEncoder`` the encoder row is the shared
    gate/magnitude direction ``encoder.weight`` (the magnitude path's extra gain ``exp(r_mag)`` is not included).

    Lookup order: ``encoder_weight()`` first, then ``W_enc``/``W_dec``, then ``encoder.weight``/``decoder.weight``.
    Raises ``TypeError`` for an object matching none of them and ``ValueError`` when the two shapes disagree.
    """
    rows = _raw_rows(model)
    if rows is None:
        raise TypeError(f"cannot find encoder/decoder weights on {type(model).__name__}; looked for {_LOOKED_FOR}")
    encoder, decoder = (t.detach().float() for t in rows)
    if encoder.ndim != 2 or encoder.shape != decoder.shape:
        raise ValueError(
            f"{type(model).__name__}: encoder rows {tuple(encoder.shape)} and decoder rows {tuple(decoder.shape)} "
            "must both be [F, d]; is a weight stored in an unexpected layout?"
        )
    return encoder, decoder
