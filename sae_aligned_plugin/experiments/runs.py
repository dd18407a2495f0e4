"""One SAE run: build it by name, train it with SAELens's ``SAETrainer``, evaluate it on held-out activations.

Metrics (held-out split of the source, after SAELens folded its activation scaling into the weights):

* ``l0``: mean number of nonzero codes per token.
* ``explained_variance``: ``1 − Σ_t ‖x_t − x̂_t‖² / Σ_t ‖x_t − mean(x)‖²`` over the held-out tokens (SAELens's
  ``ExplainedVarianceCalculator``, which computes exactly this in float64).
* ``dead_fraction``: latents with no nonzero code on any held-out token (``dead_window_tokens`` of them),
  :func:`~sae_aligned_plugin.metrics.dead_fraction`.
* ``mean_abs_phi`` / ``mean_abs_phi_live``: mean |φ| of latent co-firing over all latent pairs / over the pairs of
  latents that fired on the held-out tokens (a latent fires when its code is nonzero),
  :class:`~sae_aligned_plugin.metrics.CofiringCounter` (MetaSAE spec §3.1).
* ``alignment``: :func:`~sae_aligned_plugin.metrics.alignment_report` summary (``raw_std`` is the spread of
  ``a_i = ⟨e_i, d_i⟩``; ``max_abs_deviation_from_one`` is ``max_i |a_i − 1| / (‖e_i‖‖d_i‖)``).
* source extras (synthetic: SAELens MCC of ``W_dec`` against the true features).
"""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from sae_aligned_plugin.experiments.data import ActivationSource, FixedBatches
from sae_aligned_plugin.metrics import (
    CofiringCounter,
    alignment_report,
    cross_seed_stability_from_rows,
    dead_fraction,
    encoder_decoder_rows,
)


@dataclass(frozen=True)
class TrainSettings:
    """Training settings shared by every arm on one source (sizes, optimiser, schedule)."""

    expansion: int
    """``d_sae = expansion · d_in``."""
    steps: int
    batch_size: int
    lr: float
    warmup_fraction: float = 0.05
    """Linear lr warm-up and L1 warm-up over this fraction of the steps."""
    decay_fraction: float = 0.2
    """Linear lr decay to 0 over the last fraction of the steps (SAEBench recipe)."""
    dead_feature_window: int = 200
    """Steps without firing after which SAELens counts a latent dead during training (feeds TopK's AuxK)."""
    norm_estimate_batches: int = 50
    eval_batch_size: int = 4096


@dataclass
class RunResult:
    metrics: dict[str, Any]
    alignment_scores: NDArray[np.float64]
    encoder_rows: Tensor
    decoder_rows: Tensor


def sae_config(architecture: str, d_in: int, d_sae: int, params: dict[str, Any]) -> Any:
    """The checked SAELens training config of one run (unknown keys and impossible settings raise ``ValueError``).

    Activations are normalised by SAELens (``expected_average_only_in``: scaled to mean norm ``√d_in`` during
    training, folded into the weights at the end)."""
    from sae_aligned_plugin.saelens.registry import check_sae_config

    config = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae,
              "normalize_activations": "expected_average_only_in", **params}
    return check_sae_config(config).from_dict(config)


def build_sae(architecture: str, d_in: int, d_sae: int, params: dict[str, Any], seed: int) -> Any:
    """A fresh SAELens training SAE of a registered architecture (:func:`sae_config`), initialised under
    ``torch.manual_seed(seed)``."""
    from sae_aligned_plugin.saelens.registry import get_training_class

    cfg = sae_config(architecture, d_in, d_sae, params)
    sae_cls, _ = get_training_class(architecture)
    torch.manual_seed(seed)
    return sae_cls(cfg)


@contextmanager
def _sae_lens_bars(show: bool) -> Iterator[None]:
    """Hide SAELens's per-step and norm-estimation tqdm bars unless ``show`` (compare has a bar over runs)."""
    import sae_lens.training.activation_scaler as scaler_module
    import sae_lens.training.sae_trainer as trainer_module

    modules = (trainer_module, scaler_module)
    originals = [module.tqdm for module in modules]
    if not show:
        for module, original in zip(modules, originals):
            module.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            module.tqdm = original


def train_sae(sae: Any, source: ActivationSource, settings: TrainSettings, seed: int, *, show_steps: bool = False)\
        -> Any:
    """Train ``sae`` on ``source.train`` with ``SAETrainer``; batches come from ``FixedBatches(…, seed)``."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    warmup = int(settings.warmup_fraction * settings.steps)
    cfg = SAETrainerConfig(
        total_training_samples=settings.steps * settings.batch_size,
        train_batch_size_samples=settings.batch_size,
        lr=settings.lr,
        lr_end=settings.lr,  # the constant schedule ignores it; SAETrainer asserts it is set
        lr_scheduler_name="constant",
        lr_warm_up_steps=warmup,
        lr_decay_steps=int(settings.decay_fraction * settings.steps),
        dead_feature_window=settings.dead_feature_window,
        n_batches_for_norm_estimate=settings.norm_estimate_batches,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
    )
    with _sae_lens_bars(show_steps):
        trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=FixedBatches(source.train, settings.batch_size, seed))
        return trainer.fit()


@torch.no_grad()
def evaluate_sae(sae: Any, source: ActivationSource, batch_size: int) -> RunResult:
    """The module docstring's metrics of a trained SAE on ``source.test``."""
    from sae_lens.evals import ExplainedVarianceCalculator

    sae.eval()
    variance = ExplainedVarianceCalculator()
    cofiring = CofiringCounter(sae.cfg.d_sae)

    def encode_and_reconstruct(x: Tensor) -> Tensor:
        codes = sae.encode(x)
        variance.add_batch(sae.decode(codes), x)
        cofiring.update(codes)
        return codes

    dead = dead_fraction(encode_and_reconstruct, source.test.split(batch_size), d_sae=sae.cfg.d_sae)
    alignment, phi = alignment_report(sae), cofiring.report()
    metrics: dict[str, Any] = {
        "l0": dead.summary()["mean_l0"],
        "explained_variance": variance.compute(),
        "dead_fraction": dead.fraction_dead,
        "dead_window_tokens": dead.n_tokens,
        "mean_abs_phi": phi.mean_abs_phi,
        "mean_abs_phi_live": phi.mean_abs_phi_live,
        "alignment": alignment.summary(),
    }
    if source.extra_eval is not None:
        metrics.update(source.extra_eval(sae))
    encoder, decoder = encoder_decoder_rows(sae)
    return RunResult(metrics, np.asarray(alignment.raw), encoder.cpu().clone(), decoder.cpu().clone())


def run_arm(architecture: str, params: dict[str, Any], source: ActivationSource, settings: TrainSettings, seed: int,
            *, show_steps: bool = False) -> RunResult:
    """Build, train and evaluate one SAE; adds ``train_seconds`` to the metrics."""
    sae = build_sae(architecture, source.d_in, settings.expansion * source.d_in, params, seed)
    start = time.perf_counter()
    sae = train_sae(sae, source, settings, seed, show_steps=show_steps)
    seconds = time.perf_counter() - start
    result = evaluate_sae(sae, source, settings.eval_batch_size)
    result.metrics["train_seconds"] = seconds
    return result


STABILITY_KEYS = ("decoder_mmcs", "encoder_mmcs", "hungarian_shared_fraction")


def seed_pair_stability(runs: dict[int, RunResult], *, sign_invariant: bool = False) -> dict[str, Any]:
    """Cross-seed stability over every pair of seeds: per pair the decoder and encoder MMCS (mean of both
    directions) and the Hungarian shared fraction (decoder and encoder cosine > 0.7), and their means over pairs
    (NaN with fewer than two seeds). ``sign_invariant``: cosines in absolute value (signed codes)."""
    pairs = []
    for seed_a, seed_b in itertools.combinations(sorted(runs), 2):
        a, b = runs[seed_a], runs[seed_b]
        report = cross_seed_stability_from_rows(a.encoder_rows, a.decoder_rows, b.encoder_rows, b.decoder_rows,
                                                sign_invariant=sign_invariant)
        pairs.append({
            "seeds": [seed_a, seed_b],
            "decoder_mmcs": 0.5 * (report.decoder_mmcs_ab + report.decoder_mmcs_ba),
            "encoder_mmcs": 0.5 * (report.encoder_mmcs_ab + report.encoder_mmcs_ba),
            "hungarian_shared_fraction": report.hungarian_shared_fraction,
            "detail": report.summary(),
        })
    means = {key: float(np.mean([pair[key] for pair in pairs])) if pairs else float("nan") for key in STABILITY_KEYS}
    return {**means, "sign_invariant": sign_invariant, "pairs": pairs}
