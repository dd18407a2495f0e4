"""Identifiability of SAEs (spec ``shared/papers/isae.md`` §4–5): pairwise DCS / IoU / ℓ2 / OMP oracle, and aRIP.

Pairwise metrics compare two SAEs trained alike with different seeds (any SAELens SAE or dictionary_learning
dictionary; read by duck typing):

* **DCS**: :func:`~sae_aligned_plugin.metrics.matching.match_dictionaries` (Hungarian on ``|cos|``), mean ``|cos|``.
* **IoU**: per sample ``|supp z_a ∩ supp Πz_b| / |supp z_a ∪ supp Πz_b|`` (1 if both empty), averaged; ``Π`` is the
  signed permutation of the DCS matching.
* **ℓ2** (the authors' code, which produced their tables): ``mean_i‖z_aᵢ − Πz_bᵢ‖ / mean_i‖z_aᵢ − Πz_b_{σ(i)}‖`` with
  ``σ`` a random permutation of the samples (within each batch), so 1 ≈ chance. ``l2_mean_norm`` is the paper's
  wording instead: the same numerator over the mean code norm of the two models.
* **Oracle IoU / ℓ2**: the same on OMP codes (``k`` steps) of the SAE-space targets ``x − b`` (after the model's own
  input normalisation) on each learned dictionary.

Codes are compared by ``z ≠ 0``, so signed (AbsTopK) codes count as firing when negative. Activations are streamed
in batches; nothing of size ``F × F`` is built (see :mod:`.matching`), and codes are held one batch at a time
(the oracle: ``oracle_samples × F`` per model).

aRIP: :func:`arip_measurement` is the paper's ``R_S`` (the probe estimator on the top ``2k`` pre-activations of each
sample); :func:`rip_on_pairs` measures Def. 3.3 directly on ``S = supp f(x₁) ∪ supp f(x₂)`` for sampled pairs:
the exact mean ``r(S)`` and ``δ_S = ‖G_S − I‖_op``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from sae_aligned_plugin.core.rip import arip_estimate, arip_exact, local_rip_constant, probe_generator
from sae_aligned_plugin.metrics.matching import DENSE_LIMIT, DictionaryMatching, match_dictionaries
from sae_aligned_plugin.metrics.oracle import omp_codes
from sae_aligned_plugin.metrics.weights import encoder_decoder_rows


# ----------------------------------------------------------------------------------------------- model access


def _batches(activations: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(activations, Tensor):
        flat = activations.reshape(-1, activations.shape[-1])
        yield from flat.split(batch_size)
    else:
        for batch in activations:
            yield batch.reshape(-1, batch.shape[-1])


def _device(model: Any) -> torch.device:
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return encoder_decoder_rows(model)[1].device


def decoder_rows(model: Any) -> Tensor:
    """Decoder rows ``[F, d]`` (fp32) of any model :func:`~sae_aligned_plugin.metrics.encoder_decoder_rows` reads."""
    return encoder_decoder_rows(model)[1]


@torch.no_grad()
def encode(model: Any, x: Tensor) -> Tensor:
    """``model.encode(x)`` on the model's device, as fp32 ``[B, F]``."""
    return model.encode(x.to(_device(model))).float()


@torch.no_grad()
def sae_space_targets(model: Any, x: Tensor) -> Tensor:
    """What the decoder reconstructs without its bias: ``process_sae_in(x)`` (SAELens SAEs and the plugin's iSAE
    dictionaries: the model's input normalisation, then ``− b_dec``), else ``x − b_dec`` / ``x − bias``."""
    x = x.to(_device(model))
    if callable(getattr(model, "process_sae_in", None)):
        return model.process_sae_in(x).float()
    for name in ("b_dec", "bias"):
        bias = getattr(model, name, None)
        if isinstance(bias, Tensor) and bias.shape == x.shape[-1:]:
            return (x - bias).float()
    return x.float()


def _model_k(model: Any) -> int:
    for value in (getattr(getattr(model, "cfg", None), "k", None), getattr(model, "k", None)):
        if value is not None:
            return int(value)
    raise ValueError(f"cannot find k on {type(model).__name__}; pass oracle_k / k explicitly")


# ----------------------------------------------------------------------------------------------- pairwise


@dataclass(frozen=True)
class CodeAgreement:
    """Support IoU and normalised ℓ2 of aligned codes over ``n_samples`` samples (see the module docstring)."""

    iou: float
    l2: float
    l2_mean_norm: float
    n_samples: int


class _AgreementSums:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.iou = self.dist = self.random = self.norm_a = self.norm_b = 0.0
        self.n = 0

    def add(self, codes_a: Tensor, aligned_b: Tensor) -> None:
        on_a, on_b = codes_a != 0, aligned_b != 0
        union = (on_a | on_b).sum(-1)
        inter = (on_a & on_b).sum(-1)
        self.iou += float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union, dtype=torch.float)).sum())
        perm = torch.randperm(codes_a.shape[0], generator=self.generator).to(codes_a.device)
        self.dist += float((codes_a - aligned_b).norm(dim=-1).sum())
        self.random += float((codes_a - aligned_b[perm]).norm(dim=-1).sum())
        self.norm_a += float(codes_a.norm(dim=-1).sum())
        self.norm_b += float(aligned_b.norm(dim=-1).sum())
        self.n += codes_a.shape[0]

    def result(self) -> CodeAgreement:
        if self.n == 0:
            raise ValueError("code agreement over zero samples")
        tiny = np.finfo(np.float64).tiny
        return CodeAgreement(iou=self.iou / self.n, l2=self.dist / max(self.random, tiny),
                             l2_mean_norm=self.dist / max(0.5 * (self.norm_a + self.norm_b), tiny), n_samples=self.n)


@torch.no_grad()
def code_agreement(code_pairs: Iterable[tuple[Tensor, Tensor]], matching: DictionaryMatching, *,
                   seed: int = 0) -> CodeAgreement:
    """IoU and ℓ2 of ``(z_a, z_b)`` batches after aligning ``z_b`` with ``matching`` (``Π z_b``)."""
    sums = _AgreementSums(seed)
    for codes_a, codes_b in code_pairs:
        sums.add(codes_a.float(), matching.align(codes_b.float().to(codes_a.device)))
    return sums.result()


@dataclass(frozen=True)
class IdentifiabilityReport:
    """Pairwise identifiability of two SAEs (spec §5). ``oracle_*`` are NaN when the oracle was skipped."""

    dcs: float
    iou: float
    l2: float
    l2_mean_norm: float
    oracle_iou: float
    oracle_l2: float
    n_samples: int
    n_oracle_samples: int
    matching_method: str

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def identifiability(model_a: Any, model_b: Any, activations: Tensor | Iterable[Tensor], *,
                    oracle_k: int | None = None, oracle_samples: int = 512, batch_size: int = 512, seed: int = 0,
                    dense_limit: int = DENSE_LIMIT, candidates: int = 32) -> IdentifiabilityReport:
    """DCS, IoU, ℓ2 and the OMP oracle of ``model_a`` vs ``model_b`` on the same activations.

    ``activations``: a ``[n, d]`` tensor (split into ``batch_size`` rows) or an iterable of batches. The oracle runs on
    the first ``oracle_samples`` samples (the authors use 512; 0 skips it) with ``oracle_k`` steps (default: the
    models' ``k``).
    """
    matching = match_dictionaries(decoder_rows(model_a), decoder_rows(model_b), dense_limit=dense_limit,
                                  candidates=candidates)
    sums = _AgreementSums(seed)
    oracle_inputs: list[Tensor] = []
    n_oracle = 0
    for batch in _batches(activations, batch_size):
        codes_a = encode(model_a, batch)
        sums.add(codes_a, matching.align(encode(model_b, batch).to(codes_a.device)))
        if n_oracle < oracle_samples:
            oracle_inputs.append(batch[: oracle_samples - n_oracle])
            n_oracle += oracle_inputs[-1].shape[0]
    codes = sums.result()
    oracle = CodeAgreement(float("nan"), float("nan"), float("nan"), 0)
    if n_oracle:
        k = oracle_k if oracle_k is not None else _model_k(model_a)
        x = torch.cat(oracle_inputs)
        pair = (omp_codes(decoder_rows(model), sae_space_targets(model, x), k) for model in (model_a, model_b))
        oracle = code_agreement([tuple(pair)], matching, seed=seed)  # type: ignore[list-item]
    return IdentifiabilityReport(dcs=matching.dcs, iou=codes.iou, l2=codes.l2, l2_mean_norm=codes.l2_mean_norm,
                                 oracle_iou=oracle.iou, oracle_l2=oracle.l2, n_samples=codes.n_samples,
                                 n_oracle_samples=oracle.n_samples, matching_method=matching.method)


# ----------------------------------------------------------------------------------------------- aRIP


@torch.no_grad()
def preactivation_supports(model: Any, x: Tensor, size: int, *, signed: bool | None = None) -> Tensor:
    """Per sample the ``size`` largest (last-step) pre-activations, ``[B, size]``: by ``|·|`` for signed-code SAEs
    (``signed=None``: signed iff some code is negative), by value otherwise (spec §4, code step 1).

    Plugin iSAE models expose them through ``codes(x, support=size)``; other SAELens SAEs through
    ``encode_with_hidden_pre`` (training classes) or the ``hook_sae_acts_pre`` hook.
    """
    x = x.to(_device(model))
    if callable(getattr(model, "codes", None)):
        support = model.codes(x, support=size).support
        if support is not None:
            return support
    if callable(getattr(model, "encode_with_hidden_pre", None)):
        codes, pre = model.encode_with_hidden_pre(x)
    elif callable(getattr(model, "run_with_cache", None)):
        _, cache = model.run_with_cache(x, names_filter=lambda name: name.endswith("hook_sae_acts_pre"))
        pre, codes = next(iter(cache.values())), model.encode(x)
    else:
        raise TypeError(f"cannot read pre-activations of {type(model).__name__}: expected codes(x, support=m), "
                        "encode_with_hidden_pre(x) or a SAELens hook_sae_acts_pre")
    signed = bool((codes < 0).any()) if signed is None else signed
    return torch.topk(pre.abs() if signed else pre, size, dim=-1).indices


@torch.no_grad()
def arip_measurement(model: Any, x: Tensor, *, k: int | None = None, multiplier: int = 2, seed: int = 0,
                     batch_size: int = 512) -> float:
    """The paper's ``R_S`` (spec §4, code step 5): the aRIP probe estimator on each sample's top ``multiplier·k``
    pre-activations, over the rows of ``x`` (the authors use one batch of 2048), encoded ``batch_size`` at a time."""
    k = _model_k(model) if k is None else k
    decoder = decoder_rows(model)
    size = min(multiplier * k, decoder.shape[0])
    support = torch.cat([preactivation_supports(model, batch, size) for batch in _batches(x, batch_size)])
    return float(arip_estimate(decoder, support, generator=probe_generator(support.device, seed)))


@dataclass(frozen=True)
class RIPReport:
    """Def. 3.3 on unions of the code supports of ``n_pairs`` random sample pairs: the exact mean ``r(S)`` (the
    noise-free version of ``R_S``), and ``δ_S = ‖G_S − I‖_op`` (mean, median, max); ``mean_support_size`` ≤ 2k."""

    r_s_exact: float
    delta_mean: float
    delta_median: float
    delta_max: float
    mean_support_size: float
    n_pairs: int

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _padded_supports(on: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the ``True`` entries of ``on [B, F]`` per row, padded to the largest count: ``(indices, valid)``."""
    width = max(1, int(on.sum(-1).max()))
    top = torch.topk(on.float(), width, dim=-1)
    return top.indices, top.values > 0


@torch.no_grad()
def rip_on_pairs(model: Any, x: Tensor, *, n_pairs: int = 512, seed: int = 0, batch_size: int = 256) -> RIPReport:
    """:class:`RIPReport` for ``n_pairs`` pairs ``(x_i, x_j)``, ``i ≠ j``, drawn from the rows of ``x``; only the
    paired rows are encoded, ``batch_size`` pairs at a time."""
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] < 2:
        raise ValueError("rip_on_pairs needs at least 2 samples")
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(rows.shape[0], (n_pairs,), generator=generator)
    second = (first + torch.randint(1, rows.shape[0], (n_pairs,), generator=generator)) % rows.shape[0]
    decoder = decoder_rows(model)
    delta, r_s, sizes = [], [], []
    for start in range(0, n_pairs, batch_size):
        pair = slice(start, start + batch_size)
        union = (encode(model, rows[first[pair]]) != 0) | (encode(model, rows[second[pair]]) != 0)
        support, valid = _padded_supports(union)
        delta.append(local_rip_constant(decoder, support, valid))
        r_s.append(arip_exact(decoder, support, valid))
        sizes.append(valid.sum(-1).float())
    deltas = torch.cat(delta)
    return RIPReport(r_s_exact=float(torch.cat(r_s).mean()), delta_mean=float(deltas.mean()),
                     delta_median=float(deltas.median()), delta_max=float(deltas.max()),
                     mean_support_size=float(torch.cat(sizes).mean()), n_pairs=n_pairs)
