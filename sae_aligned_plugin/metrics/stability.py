"""Cross-seed stability of two SAEs: mean max cosine (MMCS) and Hungarian matching (spec §6, "Cross-seed stability").

* ``decoder_mmcs_ab = (1/F_a) Σ_i max_j cos(d_i^A, d_j^B)``, ``decoder_mmcs_ba`` the same from B to A; the
  ``encoder_*`` versions use the encoder rows (which the aligned parameterisation constrains).
* Hungarian one-to-one matching (``scipy.optimize.linear_sum_assignment``, maximising the summed decoder cosine,
  equivalently minimising ``1 − cos`` as in Paulo & Belrose, arXiv 2501.16615): ``min(F_a, F_b)`` pairs;
  ``hungarian_shared_fraction`` = fraction of those pairs whose decoder AND encoder cosines both exceed
  ``threshold`` (0.7).

Cosines are signed (features of non-negative codes are not sign-symmetric) unless ``sign_invariant=True``: for
SAEs with signed codes (AbsTopK, iSAE) a latent ``(e, d)`` and ``(−e, −d)`` are the same feature, so every cosine is
taken in absolute value, the matching maximises summed ``|cos|``, and a matched pair's encoder cosine is multiplied
by the sign of its decoder cosine (both rows flip together). Computed in fp32 on the models' device. The max-cosine
passes work on ``chunk_size`` rows of A at a time, so they never hold more than a ``chunk_size × F_b`` block. The
Hungarian step needs the full ``F_a × F_b`` decoder cosine matrix on the CPU (about ``12·F_a·F_b`` bytes with
scipy's float64 copy: 3 GiB at F = 16384) and is cubic in F; pass ``hungarian=False`` to skip it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from sae_aligned_plugin.metrics._arrays import frozen_array
from sae_aligned_plugin.metrics.matching import match_dictionaries
from sae_aligned_plugin.metrics.weights import encoder_decoder_rows

SCALAR_FIELDS = (
    "decoder_mmcs_ab",
    "decoder_mmcs_ba",
    "encoder_mmcs_ab",
    "encoder_mmcs_ba",
    "hungarian_mean_decoder_cos",
    "hungarian_mean_encoder_cos",
    "hungarian_shared_fraction",
    "threshold",
)


@dataclass(frozen=True, eq=False)
class StabilityReport:
    """Stability of model A against model B; the Hungarian fields are NaN when the matching was skipped.

    Per-feature arrays (read-only): ``decoder_max_cos_a`` / ``encoder_max_cos_a`` (length ``F_a``, the best cosine
    of each A feature over B), ``decoder_max_cos_b`` / ``encoder_max_cos_b`` (length ``F_b``), and
    ``hungarian_match_b`` (length ``F_a``, int64: the B feature matched to each A feature, −1 if unmatched).
    """

    decoder_mmcs_ab: float
    decoder_mmcs_ba: float
    encoder_mmcs_ab: float
    encoder_mmcs_ba: float
    hungarian_mean_decoder_cos: float
    hungarian_mean_encoder_cos: float
    hungarian_shared_fraction: float
    threshold: float
    decoder_max_cos_a: NDArray[np.float64]
    decoder_max_cos_b: NDArray[np.float64]
    encoder_max_cos_a: NDArray[np.float64]
    encoder_max_cos_b: NDArray[np.float64]
    hungarian_match_b: NDArray[np.int64]

    def summary(self) -> dict[str, float]:
        """Floats only: the scalar fields plus ``n_features_a`` and ``n_features_b``."""
        out = {name: float(getattr(self, name)) for name in SCALAR_FIELDS}
        out["n_features_a"] = float(self.decoder_max_cos_a.size)
        out["n_features_b"] = float(self.decoder_max_cos_b.size)
        return out


def max_cosine(rows_a: Tensor, rows_b: Tensor, *, chunk_size: int = 4096, sign_invariant: bool = False)\
        -> tuple[Tensor, Tensor]:
    """``(max_j cos(a_i, b_j) for each i, max_i cos(a_i, b_j) for each j)`` in fp32, chunked over rows of A
    (``|cos|`` if ``sign_invariant``).

    Holds at most a ``chunk_size × F_b`` block of cosines. Zero rows have cosine 0 with everything.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    unit_a = F.normalize(rows_a.float(), dim=-1)
    unit_b = F.normalize(rows_b.float(), dim=-1).to(unit_a.device)
    best_for_a = torch.empty(unit_a.shape[0], device=unit_a.device)
    best_for_b = torch.full((unit_b.shape[0],), -torch.inf, device=unit_a.device)
    for start in range(0, unit_a.shape[0], chunk_size):
        block = unit_a[start : start + chunk_size] @ unit_b.T
        if sign_invariant:
            block = block.abs()
        best_for_a[start : start + block.shape[0]] = block.max(dim=1).values
        best_for_b = torch.maximum(best_for_b, block.max(dim=0).values)
    return best_for_a, best_for_b


def _hungarian(
    enc_a: Tensor, dec_a: Tensor, enc_b: Tensor, dec_b: Tensor, threshold: float, sign_invariant: bool
) -> tuple[float, float, float, NDArray[np.int64]]:
    """Hungarian matching on the decoder cosines: (mean decoder cos, mean encoder cos, shared fraction, match).
    ``sign_invariant``: the signed ``|cos|`` matching of :func:`~sae_aligned_plugin.metrics.match_dictionaries`."""
    unit_enc_a, unit_enc_b = (F.normalize(t.float(), dim=-1).to(dec_a.device) for t in (enc_a, enc_b))
    if sign_invariant:
        matching = match_dictionaries(dec_a, dec_b)
        rows = np.flatnonzero(matching.match >= 0)
        cols, matched_decoder, signs = matching.match[rows], matching.abs_cos[rows], matching.signs[rows]
    else:
        unit_dec_a, unit_dec_b = (F.normalize(t.float(), dim=-1).to(dec_a.device) for t in (dec_a, dec_b))
        decoder_cos = (unit_dec_a @ unit_dec_b.T).cpu().numpy()
        rows, cols = linear_sum_assignment(decoder_cos, maximize=True)
        matched_decoder, signs = decoder_cos[rows, cols], 1.0
    matched_encoder = (unit_enc_a[rows] * unit_enc_b[cols]).sum(dim=-1).cpu().numpy() * signs
    shared = (matched_decoder > threshold) & (matched_encoder > threshold)
    match = np.full(enc_a.shape[0], -1, dtype=np.int64)
    match[rows] = cols
    return float(matched_decoder.mean()), float(matched_encoder.mean()), float(shared.mean()), match


@torch.no_grad()
def cross_seed_stability_from_rows(
    encoder_a: Tensor,
    decoder_a: Tensor,
    encoder_b: Tensor,
    decoder_b: Tensor,
    *,
    threshold: float = 0.7,
    chunk_size: int = 4096,
    hungarian: bool = True,
    sign_invariant: bool = False,
) -> StabilityReport:
    """:class:`StabilityReport` from the rows ``[F_a, d]`` of A and ``[F_b, d]`` of B (F_a may differ from F_b);
    ``sign_invariant`` for signed codes (module docstring)."""
    if decoder_a.shape[-1] != decoder_b.shape[-1]:
        raise ValueError(
            f"cross-seed stability needs the same input width: {decoder_a.shape[-1]} vs {decoder_b.shape[-1]}"
        )
    dec_ab, dec_ba = max_cosine(decoder_a, decoder_b, chunk_size=chunk_size, sign_invariant=sign_invariant)
    enc_ab, enc_ba = max_cosine(encoder_a, encoder_b, chunk_size=chunk_size, sign_invariant=sign_invariant)
    nan = float("nan")
    matching = (
        _hungarian(encoder_a, decoder_a, encoder_b, decoder_b, threshold, sign_invariant)
        if hungarian
        else (nan, nan, nan, np.full(decoder_a.shape[0], -1, dtype=np.int64))
    )
    return StabilityReport(
        decoder_mmcs_ab=float(dec_ab.mean()),
        decoder_mmcs_ba=float(dec_ba.mean()),
        encoder_mmcs_ab=float(enc_ab.mean()),
        encoder_mmcs_ba=float(enc_ba.mean()),
        hungarian_mean_decoder_cos=matching[0],
        hungarian_mean_encoder_cos=matching[1],
        hungarian_shared_fraction=matching[2],
        threshold=float(threshold),
        decoder_max_cos_a=frozen_array(dec_ab),
        decoder_max_cos_b=frozen_array(dec_ba),
        encoder_max_cos_a=frozen_array(enc_ab),
        encoder_max_cos_b=frozen_array(enc_ba),
        hungarian_match_b=frozen_array(matching[3], dtype=np.int64),
    )


def cross_seed_stability(
    model_a: Any, model_b: Any, *, threshold: float = 0.7, chunk_size: int = 4096, hungarian: bool = True,
    sign_invariant: bool = False,
) -> StabilityReport:
    """Cross-seed stability of two models, each read by :func:`~sae_aligned_plugin.metrics.encoder_decoder_rows`."""
    return cross_seed_stability_from_rows(
        *encoder_decoder_rows(model_a),
        *encoder_decoder_rows(model_b),
        threshold=threshold,
        chunk_size=chunk_size,
        hungarian=hungarian,
        sign_invariant=sign_invariant,
    )
