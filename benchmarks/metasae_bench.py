#!/usr/bin/env python
"""MetaSAE joint training vs solo BatchTopK over seeds (issue 4, item 6): mean |φ|, MSE, dead %, SAEBench meta_structure.

For each data source of the main job (SAELens synthetic ground truth; all-MiniLM-L6-v2 layer-3 residual stream on
``pydoc_data.topics``), each seed and each arm (``batchtopk`` = solo, ``metasae_batchtopk`` = joint at the paper's
λ2 = 0.3, σ² = 1, meta ≈ 9 % of d_sae, meta k = 8, n_p/n_m = 10/5), one SAE is trained with SAELens's
``SAETrainer`` through the main job's :func:`~sae_aligned_plugin.experiments.runs.train_sae` (same init and data
order for both arms of a seed: the comparison is paired). Each trained SAE is exported (``save_inference_model``; BatchTopK → JumpReLU) and evaluated on the
held-out tokens:

* ``mean_abs_phi``: mean |φ| of co-firing over all latent pairs, firing = exported code > 0 (one global threshold,
  the same rule for both arms), exact streamed counts (:func:`sae_aligned_plugin.metrics.cofiring`);
* ``fvu``: ``Σ‖x − x̂‖² / Σ‖x − mean(x)‖²`` (1 − explained variance), and ``mse`` per element (input units);
* ``dead_pct``: latents that never fire on the held-out tokens; ``l0``: mean firing latents per token;
* ``meta_structure``: SAEBench's ``decoder_fraction_variance_explained`` (a fresh BatchTopK meta SAE fitted to the
  exported decoder rows; lower = less structure shared between latents).

Per metric, :func:`sae_aligned_plugin.metrics.compare_seeds` gives the joint − solo difference relative to the
seed-to-seed spread and a paired t-test over seeds (not over the ~d_sae² non-independent pairs). Writes
``<out>/metasae_bench.md`` and ``<out>/metasae_bench.json`` (every per-seed number).
"""

from __future__ import annotations

import os

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                      "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from sae_aligned_plugin.experiments._io import write_json, write_text  # noqa: E402
from sae_aligned_plugin.experiments.data import ActivationSource, MiniLMSettings, SyntheticSettings  # noqa: E402
from sae_aligned_plugin.experiments.data import minilm_source, synthetic_source  # noqa: E402
from sae_aligned_plugin.experiments.runs import TrainSettings, build_sae, train_sae  # noqa: E402
from sae_aligned_plugin.core.metasae import default_meta_size  # noqa: E402
from sae_aligned_plugin.metrics import cofiring, compare_seeds  # noqa: E402

SOLO, JOINT = "batchtopk", "metasae_batchtopk"
METRICS = {  # key: (label, scale for display, format)
    "mean_abs_phi": ("mean \\|φ\\| (×10⁻³)", 1e3, ".3f"),
    "fvu": ("MSE as FVU = 1 − EV", 1.0, ".4f"),
    "dead_pct": ("dead latents (%)", 1.0, ".2f"),
    "meta_structure": ("SAEBench meta_structure FVE", 1.0, ".4f"),
    "l0": ("firing L0", 1.0, ".2f"),
}


@dataclass(frozen=True)
class Plan:
    data: SyntheticSettings | MiniLMSettings
    train: TrainSettings
    k: int
    joint: tuple[tuple[str, Any], ...] = ()
    """Extra config entries of the joint arm (the defaults are the paper's)."""


def default_plans() -> dict[str, Plan]:
    """Fixed here: the main job's data sources (current ``SyntheticSettings()`` / ``MiniLMSettings()`` defaults) with
    the training sizes the main job used when this bench was written (its plans have changed since)."""
    return {
        "synthetic": Plan(SyntheticSettings(), TrainSettings(expansion=8, steps=1500, batch_size=256, lr=3e-3), k=8),
        "minilm": Plan(MiniLMSettings(), TrainSettings(expansion=4, steps=1000, batch_size=256, lr=1e-3), k=32),
    }


def quick_plans() -> dict[str, Plan]:
    """Tiny sizes for a smoke run."""
    quick = TrainSettings(expansion=2, steps=60, batch_size=64, lr=1e-2, dead_feature_window=20, norm_estimate_batches=5)
    tiny_meta = (("meta_k", 2),)
    return {"synthetic": Plan(SyntheticSettings(num_features=128, hidden_dim=32, n_test=2048), quick, 4, tiny_meta),
            "minilm": Plan(MiniLMSettings(context=64, max_tokens=1800), replace(quick, expansion=1), 8, tiny_meta)}


def sae_params(arch: str, plan: Plan, seed: int = 0) -> dict[str, Any]:
    """SAE config entries: the shared k; the joint arm adds a meta lr equal to the primary lr (the authors' meta
    copies the primary config) and the run's seed as the meta's init seed (so the seed spread includes the meta's
    init); λ2, σ², sizes and schedule stay at the paper's defaults."""
    if arch != JOINT:
        return {"k": plan.k}
    return {"k": plan.k, "meta_lr": plan.train.lr, "meta_seed": seed, **dict(plan.joint)}


@torch.no_grad()
def evaluate(sae: Any, source: ActivationSource, seed: int, meta_structure_steps: int) -> dict[str, float]:
    """The module docstring's metrics of an exported (inference) SAE on ``source.test``."""
    test = source.test
    squared_error = 0.0
    for batch in test.split(4096):
        squared_error += float((sae(batch) - batch).double().pow(2).sum())
    phi = cofiring(sae.encode, test.split(4096), d_sae=sae.cfg.d_sae)
    summary = phi.summary()
    return {
        "mean_abs_phi": phi.mean_abs_phi,
        "mean_phi": phi.mean_phi,
        "phi_noise_floor": summary["noise_floor"],
        "fvu": squared_error / float((test - test.mean(0)).double().pow(2).sum()),
        "mse": squared_error / test.numel(),
        "dead_pct": 100.0 * float((phi.firing_counts == 0).mean()),
        "l0": summary["mean_l0"],
        "meta_structure": saebench_meta_structure(sae, seed, meta_structure_steps),
        "n_test_tokens": float(test.shape[0]),
    }


def saebench_meta_structure(sae: Any, seed: int, train_steps: int) -> float:
    """SAEBench 0.6.0's offline ``meta_structure`` eval on the SAE (imported lazily; seeded, autocast off on CPU)."""
    from sae_bench.evals.meta_structure.eval_config import MetaStructureEvalConfig
    from sae_bench.evals.meta_structure.main import run_eval_single_sae

    config = MetaStructureEvalConfig(train_steps=train_steps, train_batch_size=256, autocast=False, random_seed=seed)
    torch.manual_seed(seed)  # SAEBench samples decoder rows with the global generator
    with torch.enable_grad():  # it trains a meta SAE
        output = run_eval_single_sae("metasae_bench", sae.cfg.metadata.training_architecture or "sae", sae, config,
                                     "cpu")
    return float(output.eval_result_metrics.meta_structure.decoder_fraction_variance_explained)


def run_one(arch: str, plan: Plan, source: ActivationSource, seed: int, meta_structure_steps: int) -> dict[str, Any]:
    from sae_lens import SAE

    sae = build_sae(arch, source.d_in, plan.train.expansion * source.d_in, sae_params(arch, plan, seed), seed)
    start = time.perf_counter()
    sae = train_sae(sae, source, plan.train, seed)
    seconds = time.perf_counter() - start
    extra = {}
    if arch == JOINT:
        critic = sae.meta_critic
        extra = {"joint_mean_p": float(critic.penalty(sae.W_dec).mean_p), "meta_steps": int(critic.meta_step),
                 "meta_dead_fraction": float(critic.sae.dead_mask().float().mean())}
    with tempfile.TemporaryDirectory() as folder:
        sae.save_inference_model(folder)
        exported = SAE.load_from_disk(folder)
    return {"train_seconds": seconds, **evaluate(exported, source, seed, meta_structure_steps), **extra}


def _fmt(values: list[float], scale: float, spec: str) -> str:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else float("nan")
    return f"{mean * scale:{spec}} ± {sd * scale:{spec}}"


def markdown(meta: dict[str, Any], results: dict[str, Any]) -> str:
    lines = ["# MetaSAE joint vs solo BatchTopK: measured", "", f"- command: `{meta['command']}`",
             f"- date {meta['date']}; {meta['platform']}; torch {meta['torch']}; wall time {meta['wall_seconds']:.0f} s",
             f"- seeds {meta['seeds']} (paired: both arms of a seed share init and data order); joint = "
             f"`{JOINT}` at the paper's defaults unless listed per source (λ2 = 0.3 in paper units, σ² = 1, meta ≈ 9 % of "
             f"d_sae, meta k = 8, n_p/n_m = 10/5, meta Adam betas (0.9, 0.99)) with meta lr = primary lr",
             "- mean ± sd over seeds; Δ = joint − solo (relative to solo); Δ/spread = Δ over the pooled seed-to-seed "
             "sd; p = paired t-test over seeds (3 seeds: little power, read Δ/spread)", ""]
    for source, block in results.items():
        lines += [f"## {source}", "", block["description"], "",
                  f"| metric | solo `{SOLO}` | joint `{JOINT}` | Δ (rel.) | Δ/spread | p (paired t) |",
                  "|---|---|---|---|---|---|"]
        for key, (label, scale, spec) in METRICS.items():
            c = block["comparisons"][key]
            rel = f"{c['relative_difference']:+.1%}" if c["relative_difference"] is not None else "n/a"
            lines.append(f"| {label} | {_fmt(c['baseline'], scale, spec)} | {_fmt(c['candidate'], scale, spec)} "
                         f"| {c['difference'] * scale:+{spec}} ({rel}) | {c['effect']:+.2f} | {c['p_value']:.3f} |")
        joint = block["runs"][JOINT]
        lines += ["", "Joint diagnostics per seed: " + "; ".join(
            f"seed {seed}: own-critic mean p {r['joint_mean_p']:.3f}, {r['meta_steps']} meta steps, meta dead "
            f"{100 * r['meta_dead_fraction']:.0f} %" for seed, r in joint.items())
            + f". |φ| noise floor sqrt(2/(π n)) = {next(iter(joint.values()))['phi_noise_floor'] * 1e3:.3f}×10⁻³.", ""]
    return "\n".join(lines) + "\n"


def describe(source: ActivationSource, plan: Plan) -> str:
    t = plan.train
    return (f"{source.name}: d_in {source.d_in}, d_sae {t.expansion * source.d_in}, k {plan.k}; {t.steps} steps × "
            f"{t.batch_size}, Adam lr {t.lr} (SAELens `expected_average_only_in`); {source.train.shape[0]} training / "
            f"{source.test.shape[0]} held-out tokens. Joint arm config entries: {sae_params(JOINT, plan)} with "
            f"`meta_seed` = the run's seed (the rest at the paper's defaults; meta size "
            f"{default_meta_size(t.expansion * source.d_in)}).")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where metasae_bench.md/.json go")
    parser.add_argument("--cache", type=Path, default=Path("runs/metasae_bench/cache"), help="MiniLM activation cache")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sources", default="synthetic,minilm")
    parser.add_argument("--meta-structure-steps", type=int, default=300, help="SAEBench meta_structure train steps")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    plans = quick_plans() if args.quick else default_plans()
    results: dict[str, Any] = {}
    for name in args.sources.split(","):
        plan = plans[name]
        source = (synthetic_source(plan.data, n_train=plan.train.steps * plan.train.batch_size)
                  if isinstance(plan.data, SyntheticSettings) else minilm_source(plan.data, args.cache))
        runs: dict[str, dict[int, Any]] = {SOLO: {}, JOINT: {}}
        for seed in range(args.seeds):
            for arch in (SOLO, JOINT):
                runs[arch][seed] = run_one(arch, plan, source, seed, args.meta_structure_steps)
                print(f"{name} seed {seed} {arch}: " + ", ".join(f"{k} {v:.4g}" for k, v in runs[arch][seed].items()),
                      file=sys.stderr, flush=True)
        comparisons = {key: asdict(compare_seeds({s: r[key] for s, r in runs[SOLO].items()},
                                                 {s: r[key] for s, r in runs[JOINT].items()}))
                       for key in (*METRICS, "mse")} if args.seeds > 1 else {}
        results[name] = {"description": describe(source, plan), "source_info": source.info,
                         "plan": {"train": asdict(plan.train), "k": plan.k,
                                  "joint_params": {s: sae_params(JOINT, plan, s) for s in range(args.seeds)}},
                         "runs": runs, "comparisons": comparisons}
    meta = {"command": shlex.join(["python", "benchmarks/metasae_bench.py", *(argv if argv is not None else sys.argv[1:])]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "platform": f"{platform.machine()}, {torch.get_num_threads()} threads", "seeds": list(range(args.seeds)),
            "wall_seconds": time.perf_counter() - started}
    report = {"meta": meta, "results": results}
    write_json(args.out / "metasae_bench.json", report)
    if args.seeds > 1:
        write_text(args.out / "metasae_bench.md", markdown(meta, results))
    return report


if __name__ == "__main__":
    main()
