"""Synthetic identifiability bench: the iSAE paper's Table 1 ladder, scaled down to 2 CPU cores.

    python -m sae_aligned_plugin.experiments.isae_bench [--output docs/isae_bench_results] [--help]

For each regime (i.i.d. atoms on the sphere, mixture ``s = 0.3``; :mod:`.isae_synthetic`) one ground-truth
dictionary is drawn; each rung (TopK, AbsTopK, iSAE, iSAE-ME; spec ``shared/papers/isae.md`` §3) is trained with the
same recipe (:class:`~sae_aligned_plugin.dictionary_learning.ISAETrainer`) from ``--seeds`` on fresh online batches
and evaluated on held-out samples:

* per run: **MSE** (variance-normalised, ≈ FVU, on normalised inputs: the paper's ``eval/recon_mse``), **R_S**
  (:func:`~sae_aligned_plugin.metrics.arip_measurement`: probe estimator on the top-2k pre-activations, 2048 samples),
  **δ_S** (mean ``‖G_S − I‖_op`` over sampled support pairs, unreported by the paper) and **DCS to the ground truth**;
* per seed pair: **DCS**, **SAE IoU**, **SAE ℓ2** (random re-pairing normaliser, as the authors' code), **oracle IoU**
  (OMP, 512 samples) (:func:`~sae_aligned_plugin.metrics.identifiability`).

Means over runs and pairs go to ``<output>.json`` and ``<output>.md`` (written atomically), with the command line.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_aligned_plugin.experiments._io import write_json, write_text
from sae_aligned_plugin.experiments.isae_synthetic import IID, MIXTURE, SyntheticDictionary

RUNGS: dict[str, dict[str, Any]] = {
    "topk": {"signed": False, "arip_coefficient": 0.0, "l1_coefficient": 0.0},
    "abstopk": {"signed": True, "arip_coefficient": 0.0, "l1_coefficient": 0.0},
    "isae": {"signed": True},
    "isae_me": {"signed": True, "encoder_steps": 5},
}
"""Trainer keywords per rung (the rest is the shared recipe: aRIP 0.1 and L1 0.01 as in the authors' configs)."""
REGIMES = {"iid": IID, "mixture": MIXTURE}
RUN_COLUMNS = ("mse", "r_s", "delta_s", "dcs_truth")
PAIR_COLUMNS = ("dcs", "iou", "l2", "oracle_iou")


@dataclass(frozen=True)
class BenchConfig:
    d_in: int = 48
    d_sae: int = 256
    k: int = 3
    steps: int = 1500
    batch: int = 256
    lr: float = 1e-2
    warmup_steps: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    data_seed: int = 42
    eval_samples: int = 4096
    rungs: tuple[str, ...] = tuple(RUNGS)
    regimes: tuple[str, ...] = tuple(REGIMES)


def train_rung(rung: str, truth: SyntheticDictionary, seed: int, cfg: BenchConfig, bar: Any) -> Any:
    """Train one rung from ``seed`` on fresh batches of ``truth``; returns the trained dictionary."""
    from sae_aligned_plugin.dictionary_learning import ISAETrainer

    trainer = ISAETrainer(cfg.steps, cfg.d_in, cfg.d_sae, cfg.k, 0, "synthetic", seed=seed, lr=cfg.lr,
                          warmup_steps=cfg.warmup_steps, **RUNGS[rung])
    for step, x in zip(range(cfg.steps), truth.batches(cfg.batch, seed=10_000 + seed)):
        trainer.update(step, x)
        bar.update()
    return trainer.ae


@torch.no_grad()
def evaluate_run(model: Any, truth: SyntheticDictionary, x: torch.Tensor) -> dict[str, float]:
    from sae_aligned_plugin.metrics import arip_measurement, match_dictionaries, rip_on_pairs

    x_hat = model(x)
    fvu = float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {"mse": fvu, "r_s": arip_measurement(model, x[:2048]), "delta_s": rip_on_pairs(model, x).delta_mean,
            "dcs_truth": match_dictionaries(model.W_dec, truth.atoms).dcs}


def evaluate_pair(a: Any, b: Any, x: torch.Tensor) -> dict[str, float]:
    from sae_aligned_plugin.metrics import identifiability

    report = identifiability(a, b, x, oracle_samples=512)
    return {"dcs": report.dcs, "iou": report.iou, "l2": report.l2, "oracle_iou": report.oracle_iou}


def run(cfg: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every rung × regime × seed; returns per-run, per-pair and aggregated results."""
    results: dict[str, Any] = {"runs": [], "pairs": [], "table": []}
    total = len(cfg.regimes) * len(cfg.rungs) * len(cfg.seeds) * cfg.steps
    with tqdm(total=total, unit="step", disable=not progress, desc="isae bench") as bar:
        for offset, regime in enumerate(cfg.regimes):
            truth = SyntheticDictionary.generate(cfg.d_in, cfg.d_sae, cfg.k, REGIMES[regime], cfg.data_seed + offset)
            x_eval = truth.sample(cfg.eval_samples, torch.Generator().manual_seed(cfg.data_seed + 100 + offset))[0]
            for rung in cfg.rungs:
                bar.set_postfix_str(f"{regime}/{rung}")
                start = time.perf_counter()
                models = {seed: train_rung(rung, truth, seed, cfg, bar) for seed in cfg.seeds}
                seconds = (time.perf_counter() - start) / len(cfg.seeds)
                runs = [{"regime": regime, "rung": rung, "seed": seed, "train_seconds": seconds,
                         **evaluate_run(model, truth, x_eval)} for seed, model in models.items()]
                pairs = [{"regime": regime, "rung": rung, "seeds": [a, b], **evaluate_pair(models[a], models[b], x_eval)}
                         for a, b in itertools.combinations(cfg.seeds, 2)]
                results["runs"] += runs
                results["pairs"] += pairs
                results["table"].append({"regime": regime, "rung": rung, "train_seconds_per_run": seconds,
                                         **{c: float(np.mean([r[c] for r in runs])) for c in RUN_COLUMNS},
                                         **{c: float(np.mean([p[c] for p in pairs])) if pairs else float("nan")
                                            for c in PAIR_COLUMNS}})
    return results


def markdown(cfg: BenchConfig, results: dict[str, Any], command: str) -> str:
    head = [
        "| regime | model | MSE | R_S | SAE IoU | SAE ℓ2 | oracle IoU | DCS | DCS to truth | δ_S | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [f"| {r['regime']} | {r['rung']} | {r['mse']:.3f} | {r['r_s']:.3f} | {r['iou']:.3f} | {r['l2']:.3f} "
            f"| {r['oracle_iou']:.3f} | {r['dcs']:.3f} | {r['dcs_truth']:.3f} | {r['delta_s']:.3f} "
            f"| {r['train_seconds_per_run']:.0f} |" for r in results["table"]]
    note = (f"N = {cfg.d_in}, K = {cfg.d_sae}, k = {cfg.k}; {cfg.steps} steps × {cfg.batch} fresh samples, Adam "
            f"{cfg.lr:g}, {cfg.warmup_steps} warm-up steps, decay over the last 20 %; seeds {list(cfg.seeds)} "
            f"(pairwise columns: mean over the {len(list(itertools.combinations(cfg.seeds, 2)))} seed pairs); "
            f"{cfg.eval_samples} held-out samples. Command: `{command}`")
    return "\n".join([note, "", *head, *rows]) + "\n"


def build_parser() -> argparse.ArgumentParser:
    defaults = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name in ("d_in", "d_sae", "k", "steps", "batch", "warmup_steps", "data_seed", "eval_samples"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--seeds", default=",".join(map(str, defaults.seeds)), help="comma-separated training seeds")
    p.add_argument("--rungs", default=",".join(defaults.rungs), help=f"subset of {','.join(RUNGS)}")
    p.add_argument("--regimes", default=",".join(defaults.regimes), help=f"subset of {','.join(REGIMES)}")
    p.add_argument("--output", type=Path, default=Path("docs/isae_bench_results"), help="writes OUTPUT.json and OUTPUT.md")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rungs, regimes = tuple(args.rungs.split(",")), tuple(args.regimes.split(","))
    unknown = sorted((set(rungs) - set(RUNGS)) | (set(regimes) - set(REGIMES)))
    if unknown:
        raise SystemExit(f"unknown rung/regime {unknown}; rungs {list(RUNGS)}, regimes {list(REGIMES)}")
    cfg = BenchConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k, steps=args.steps, batch=args.batch, lr=args.lr,
                      warmup_steps=args.warmup_steps, seeds=tuple(int(s) for s in args.seeds.split(",")),
                      data_seed=args.data_seed, eval_samples=args.eval_samples, rungs=rungs, regimes=regimes)
    command = "python -m sae_aligned_plugin.experiments.isae_bench " + " ".join(argv)
    started = time.perf_counter()
    results = run(cfg, progress=not args.no_progress)
    results["meta"] = {"config": cfg.__dict__, "command": command, "wall_seconds": time.perf_counter() - started,
                       "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}
    table = markdown(cfg, results, command.strip())
    write_json(args.output.with_suffix(".json"), results)
    write_text(args.output.with_suffix(".md"), table)
    print(table)
    return results


if __name__ == "__main__":
    main()
