"""Per-feature alignment scores, their bimodality, and the aligned-SAE invariant check (spec §2, §6).

Three versions of the score are reported, because which normalisation the paper plots is unknown (spec §2):

* ``raw``          ``a_i = ⟨e_i, d_i⟩``; invariant under the rescaling
  ``(e_i, b_enc_i, d_i) → (c·e_i, c·b_enc_i, d_i/c)``.
* ``unit_decoder`` ``⟨e_i, d̂_i⟩ = a_i / ||d_i||``, the score once the decoder row is unit-normalised and the encoder
  is left as stored (``= ||e_i||·cos``; equals ``a_i`` when decoders are unit norm). Normalising through the
  rescaling symmetry instead would give back ``a_i`` itself, i.e. ``raw``.
* ``cosine``       ``a_i / (||e_i||·||d_i||)`` (SAEBench's ``encoder_decoder_cosine_sim``).

A feature whose encoder or decoder row is exactly zero gets ``cosine = 0`` (``unit_decoder = 0`` for a zero decoder
row); its deviation from 1 is then huge (``1/tiny``) rather than ``inf``, so it stands out but stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from sae_aligned_plugin.core.aligned import alignment_scores
from sae_aligned_plugin.metrics._arrays import describe, frozen_array
from sae_aligned_plugin.metrics.weights import encoder_decoder_rows

BIMODALITY_THRESHOLD = 5.0 / 9.0
"""Sarle's coefficient of a uniform distribution; values above it suggest bimodality."""

SCORE_NAMES = ("raw", "unit_decoder", "cosine")


def bimodality_coefficient(values: ArrayLike, *, rel_tol: float = 1e-5) -> float:
    """Sarle's bimodality coefficient ``BC = (g² + 1) / (k + 3(n−1)² / ((n−2)(n−3)))``.

    ``g`` is the bias-corrected sample skewness and ``k`` the bias-corrected sample excess kurtosis (the SAS
    definitions, scipy's ``skew``/``kurtosis`` with ``bias=False``), computed in float64. ``BC > 5/9 ≈ 0.555``
    suggests bimodality; a normal sample gives about 1/3, two equal well-separated spikes about 1.

    Conventions: zero variance gives ``0.0`` (a spike is not bimodal), and so does a spread below
    ``rel_tol·mean|x|`` (fp32 rounding noise around an aligned SAE's ``a_i = 1`` is not a distribution);
    fewer than 4 values give NaN (undefined). Non-finite values raise ``ValueError``.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError(f"bimodality_coefficient: {int((~np.isfinite(x)).sum())} non-finite values")
    n = x.size
    if n < 4:
        return float("nan")
    centred = x - x.mean()
    m2 = float(np.mean(centred**2))
    if m2 == 0.0 or np.sqrt(m2) <= rel_tol * float(np.mean(np.abs(x))):
        return 0.0
    g1 = float(np.mean(centred**3)) / m2**1.5
    g2 = float(np.mean(centred**4)) / m2**2 - 3.0
    skew = g1 * np.sqrt(n * (n - 1.0)) / (n - 2.0)
    small_sample = (n - 2.0) * (n - 3.0)
    excess_kurtosis = (n - 1.0) / small_sample * ((n + 1.0) * g2 + 6.0)
    return float((skew**2 + 1.0) / (excess_kurtosis + 3.0 * (n - 1.0) ** 2 / small_sample))


@dataclass(frozen=True, eq=False)
class AlignmentReport:
    """Per-feature alignment scores (read-only float64 arrays, length F) and their summary statistics.

    ``max_abs_deviation_from_one = max_i |a_i − 1| / (||e_i||·||d_i||)`` is spec check 1 (≤ 1e-6 for an aligned SAE
    in fp32).
    """

    raw: NDArray[np.float64]
    unit_decoder: NDArray[np.float64]
    cosine: NDArray[np.float64]
    bimodality_raw: float
    bimodality_unit_decoder: float
    bimodality_cosine: float
    max_abs_deviation_from_one: float

    @property
    def n_features(self) -> int:
        return int(self.raw.size)

    def summary(self) -> dict[str, float]:
        """Floats only: ``n_features``, per score ``{name}_mean/_std/_min/_median/_max`` and ``bimodality_{name}``,
        and ``max_abs_deviation_from_one``."""
        out: dict[str, float] = {"n_features": float(self.n_features)}
        for name in SCORE_NAMES:
            out.update(describe(name, getattr(self, name)))
            out[f"bimodality_{name}"] = float(getattr(self, f"bimodality_{name}"))
        out["max_abs_deviation_from_one"] = float(self.max_abs_deviation_from_one)
        return out


@torch.no_grad()
def alignment_report_from_rows(encoder: Tensor, decoder: Tensor) -> AlignmentReport:
    """:class:`AlignmentReport` from encoder rows and decoder rows, both ``[F, d]``; scores computed in fp32."""
    encoder, decoder = encoder.detach().float(), decoder.detach().float()
    raw = alignment_scores(encoder, decoder)
    tiny = torch.finfo(torch.float32).tiny
    decoder_norm = decoder.norm(dim=-1)
    norm_product = (encoder.norm(dim=-1) * decoder_norm).clamp_min(tiny)
    scores = {
        "raw": frozen_array(raw),
        "unit_decoder": frozen_array(raw / decoder_norm.clamp_min(tiny)),
        "cosine": frozen_array(raw / norm_product),
    }
    deviation = ((raw - 1.0).abs() / norm_product).max() if raw.numel() else torch.tensor(0.0)
    return AlignmentReport(
        **scores,
        **{f"bimodality_{name}": bimodality_coefficient(values) for name, values in scores.items()},
        max_abs_deviation_from_one=float(deviation),
    )


def alignment_report(model: Any) -> AlignmentReport:
    """Alignment scores of any model :func:`~sae_aligned_plugin.metrics.encoder_decoder_rows` accepts."""
    return alignment_report_from_rows(*encoder_decoder_rows(model))
