"""Signed one-to-one matching of two dictionaries by Hungarian assignment on ``|cos|`` (spec ``isae.md`` §5, DCS).

Two runs can learn ``d`` and ``−d``, so atoms are matched on the absolute cosine and each pair keeps the sign of its
cosine; the mean ``|cos|`` of the matched pairs is the dictionary cosine similarity (DCS, the authors' PW-MCC).

Up to ``dense_limit`` atoms per side the full ``|cos|`` matrix goes to ``scipy.optimize.linear_sum_assignment``
(exact). Above it nothing of size ``F_a × F_b`` is built: cosines are computed in row blocks of at most
``BLOCK_ELEMENTS`` entries, each row keeps its ``candidates`` best partners and each column its ``candidates`` best,
and the maximum-weight full matching of that sparse graph is found with
``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp). It equals the exact assignment whenever the
optimum uses only candidate edges (``method`` records which path ran); if the sparse graph has no full matching the
candidate count is doubled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from torch import Tensor

from sae_aligned_plugin.metrics._arrays import frozen_array

DENSE_LIMIT = 8192
BLOCK_ELEMENTS = 1 << 24
MAX_CANDIDATES = 1024


@dataclass(frozen=True, eq=False)
class DictionaryMatching:
    """``match[i]``: atom of B matched to atom ``i`` of A (−1 if unmatched, when ``F_a > F_b``); ``signs[i]`` = sign of
    that cosine (±1, 0 if unmatched); ``abs_cos[i]`` its ``|cos|`` (NaN if unmatched)."""

    match: NDArray[np.int64]
    signs: NDArray[np.float64]
    abs_cos: NDArray[np.float64]
    method: str

    @property
    def dcs(self) -> float:
        """Mean ``|cos|`` over the ``min(F_a, F_b)`` matched pairs."""
        return float(np.nanmean(self.abs_cos))

    def align(self, codes_b: Tensor) -> Tensor:
        """``Π z_b``: B's codes ``[..., F_b]`` permuted and sign-flipped into A's latent order ``[..., F_a]``."""
        match = torch.tensor(self.match, device=codes_b.device)
        signs = torch.tensor(self.signs, device=codes_b.device, dtype=codes_b.dtype)
        return codes_b[..., match.clamp_min(0)] * signs


def _unit(rows: Tensor) -> Tensor:
    return F.normalize(rows.detach().float(), dim=-1)


def _blocks(unit_a: Tensor, unit_b: Tensor):  # type: ignore[no-untyped-def]
    step = max(1, BLOCK_ELEMENTS // max(1, unit_b.shape[0]))
    for start in range(0, unit_a.shape[0], step):
        yield start, unit_a[start : start + step] @ unit_b.T


def _dense_assignment(unit_a: Tensor, unit_b: Tensor) -> tuple[NDArray, NDArray]:
    cos = torch.cat([block for _, block in _blocks(unit_a, unit_b)]).abs().cpu().numpy()
    return linear_sum_assignment(cos, maximize=True)


def _candidate_edges(unit_a: Tensor, unit_b: Tensor, m: int) -> tuple[NDArray, NDArray]:
    """Row and column top-``m`` edges of ``|cos|`` (deduplicated), computed block by block."""
    rows, cols = [], []
    col_best = torch.full((0, unit_b.shape[0]), -1.0, device=unit_a.device)
    col_rows = torch.zeros((0, unit_b.shape[0]), dtype=torch.int64, device=unit_a.device)
    for start, block in _blocks(unit_a, unit_b):
        block = block.abs()
        top = block.topk(min(m, block.shape[1]), dim=1).indices
        rows.append((torch.arange(block.shape[0], device=block.device)[:, None] + start).expand_as(top).reshape(-1))
        cols.append(top.reshape(-1))
        values = torch.cat([col_best, block])
        keep = values.topk(min(m, values.shape[0]), dim=0)
        owners = torch.cat([col_rows, torch.arange(start, start + block.shape[0], device=block.device)[:, None]
                            .expand_as(block)])
        col_best, col_rows = keep.values, owners.gather(0, keep.indices)
    rows.append(col_rows.reshape(-1))
    cols.append(torch.arange(unit_b.shape[0], device=unit_a.device).repeat(col_rows.shape[0]))
    keys = np.unique((torch.cat(rows) * unit_b.shape[0] + torch.cat(cols)).cpu().numpy())
    return keys // unit_b.shape[0], keys % unit_b.shape[0]


def _sparse_assignment(unit_a: Tensor, unit_b: Tensor, candidates: int) -> tuple[NDArray, NDArray, int]:
    m = candidates
    while True:
        row, col = _candidate_edges(unit_a, unit_b, m)
        weights = (unit_a[torch.as_tensor(row)] * unit_b[torch.as_tensor(col)]).sum(-1).abs().cpu().numpy()
        graph = scipy.sparse.csr_array((1.0 + weights.astype(np.float64), (row, col)),
                                       shape=(unit_a.shape[0], unit_b.shape[0]))
        try:
            matched_rows, matched_cols = min_weight_full_bipartite_matching(graph, maximize=True)
            return matched_rows, matched_cols, m
        except ValueError:
            if m >= MAX_CANDIDATES:
                raise
            m *= 2


@torch.no_grad()
def match_dictionaries(decoder_a: Tensor, decoder_b: Tensor, *, dense_limit: int = DENSE_LIMIT,
                       candidates: int = 32) -> DictionaryMatching:
    """Signed Hungarian matching of atoms (rows ``[F_a, d]`` and ``[F_b, d]``) on ``|cos|``; see the module docstring."""
    if decoder_a.ndim != 2 or decoder_b.ndim != 2 or decoder_a.shape[1] != decoder_b.shape[1]:
        raise ValueError(f"dictionaries must be [F, d] with the same d, got {tuple(decoder_a.shape)} and "
                         f"{tuple(decoder_b.shape)}")
    unit_a, unit_b = _unit(decoder_a), _unit(decoder_b).to(decoder_a.device)
    if max(unit_a.shape[0], unit_b.shape[0]) <= dense_limit:
        rows, cols = _dense_assignment(unit_a, unit_b)
        method = "dense"
    else:
        rows, cols, used = _sparse_assignment(unit_a, unit_b, candidates)
        method = f"sparse-top{used}"
    rows_t, cols_t = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    cos = (unit_a[rows_t] * unit_b[cols_t]).sum(-1).double().cpu().numpy()
    match = np.full(unit_a.shape[0], -1, dtype=np.int64)
    signs = np.zeros(unit_a.shape[0])
    abs_cos = np.full(unit_a.shape[0], np.nan)
    match[rows], signs[rows], abs_cos[rows] = cols, np.where(cos < 0, -1.0, 1.0), np.abs(cos)
    return DictionaryMatching(frozen_array(match, dtype=np.int64), frozen_array(signs), frozen_array(abs_cos), method)
