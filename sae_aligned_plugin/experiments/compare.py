"""``sae-aligned compare``: offline comparison of baseline SAELens architectures and the plugin's architectures.

For every data source (SAELens synthetic ground truth; MiniLM layer-3 residual stream on pydoc text), every arm of
:data:`~sae_aligned_plugin.experiments.arms.ARMS` and every seed, train one SAE with SAELens's ``SAETrainer``
(same data and data order for all arms of a seed; the seed sets the SAE init and the data order), evaluate it on
held-out activations, and aggregate over seeds (mean ± std, cross-seed stability). Writes, atomically,
``<out>/results.md`` (the table), ``<out>/results.json`` (every number, per seed) and ``<out>/plots/*.png``
(alignment-score histograms); MiniLM activations are cached in ``<out>/cache/``.

Runs go to ``--jobs`` spawned worker processes (:mod:`~sae_aligned_plugin.experiments.grid`): calling
:func:`main` from your own script with ``--jobs`` > 1 needs the usual ``if __name__ == "__main__":`` guard there.
"""

from __future__ import annotations

import os

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                      "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from tqdm.auto import tqdm  # noqa: E402

from sae_aligned_plugin.experiments._io import write_json, write_text  # noqa: E402
from sae_aligned_plugin.experiments.arms import Arm, select_arms  # noqa: E402
from sae_aligned_plugin.experiments.data import (  # noqa: E402
    ActivationSource,
    MiniLMSettings,
    SyntheticSettings,
    minilm_source,
    synthetic_source,
)
from sae_aligned_plugin.experiments.report import (  # noqa: E402
    TABLE_LEGEND,
    aggregate,
    markdown_table,
    write_histograms,
)
from sae_aligned_plugin.experiments.grid import Task, run_grid, usable_cores  # noqa: E402
from sae_aligned_plugin.experiments.runs import (  # noqa: E402
    RunResult,
    TrainSettings,
    sae_config,
    seed_pair_stability,
)

SOURCES = ("synthetic", "minilm")


@dataclass
class SourcePlan:
    """Everything one source needs: its data settings, the shared training settings, and per-family SAE params."""

    data: SyntheticSettings | MiniLMSettings
    train: TrainSettings
    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Hyperparameter family (:attr:`Arm.family`) → SAE config entries; a baseline and its plugin arms share them."""
    architecture_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Architecture → its method's own config entries where they differ from the architecture's defaults."""

    def family_params(self, family: str) -> dict[str, Any]:
        """The family's entries, plus the L1 warm-up over the warm-up fraction of the steps for an L1 family."""
        params = dict(self.families[family])
        if "l1_coefficient" in params:
            params.setdefault("l1_warm_up_steps", int(self.train.warmup_fraction * self.train.steps))
        return params

    def params(self, arm: Arm) -> dict[str, Any]:
        """Config entries of one arm: its family's, then its architecture's own."""
        return {**self.family_params(arm.family), **self.architecture_params.get(arm.architecture, {})}


def default_plans() -> dict[str, SourcePlan]:
    """The default run (sized for about 5 minutes on 2 CPU cores, MiniLM extraction included)."""
    return {
        "synthetic": SourcePlan(
            data=SyntheticSettings(),
            train=TrainSettings(expansion=8, steps=1000, batch_size=256, lr=3e-3),
            families={"standard": {"l1_coefficient": 2.0}, "topk": {"k": 4}, "batchtopk": {"k": 4}},
            architecture_params={"metasae_batchtopk": {"meta_lr": 3e-3}},
        ),
        "minilm": SourcePlan(
            data=MiniLMSettings(),
            train=TrainSettings(expansion=2, steps=500, batch_size=128, lr=2e-3),
            families={"standard": {"l1_coefficient": 2.0}, "topk": {"k": 32}, "batchtopk": {"k": 32}},
            architecture_params={"metasae_batchtopk": {"meta_lr": 2e-3}},
        ),
    }


def quick_plans() -> dict[str, SourcePlan]:
    """Tiny sizes for tests (a few seconds per source after the imports)."""
    return {
        "synthetic": SourcePlan(
            data=SyntheticSettings(num_features=64, hidden_dim=16, n_test=2048),
            train=TrainSettings(expansion=4, steps=80, batch_size=64, lr=1e-2, dead_feature_window=20,
                                norm_estimate_batches=5),
            families={"standard": {"l1_coefficient": 2.0}, "topk": {"k": 4}, "batchtopk": {"k": 4}},
            architecture_params={"metasae_batchtopk": {"meta_lr": 1e-2, "meta_k": 4}},  # meta size 6 here
        ),
        "minilm": SourcePlan(
            data=MiniLMSettings(context=64, max_tokens=1800),
            train=TrainSettings(expansion=1, steps=60, batch_size=64, lr=1e-2, dead_feature_window=20,
                                norm_estimate_batches=5),
            families={"standard": {"l1_coefficient": 2.0}, "topk": {"k": 16}, "batchtopk": {"k": 16}},
            architecture_params={"metasae_batchtopk": {"meta_lr": 1e-2}},
        ),
    }


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae-aligned compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default: %(default)s)")
    parser.add_argument("--sources", type=_csv, default=list(SOURCES),
                        help=f"comma-separated data sources (default: {','.join(SOURCES)})")
    parser.add_argument("--arms", type=_csv, default=None,
                        help="comma-separated architectures (default: all, see sae_aligned_plugin.experiments.arms)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a small slice of text (tests)")
    sizes = parser.add_argument_group("size knobs (override the chosen plan for every selected source)")
    sizes.add_argument("--steps", type=int, help="training steps per SAE")
    sizes.add_argument("--batch-size", type=int, help="activations per training batch")
    sizes.add_argument("--expansion", type=int, help="d_sae / d_in")
    sizes.add_argument("--lr", type=float, help="Adam learning rate (MetaSAE's meta SAE follows it)")
    sizes.add_argument("--l1-coefficient", type=float, help="L1 coefficient of the standard family")
    sizes.add_argument("--k", type=int, help="k of the topk and batchtopk families")
    sizes.add_argument("--max-tokens", type=int, help="MiniLM: text tokens to extract (default: all, ~128k)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads per run (default: %(default)s; these small SAEs gain little from a second "
                             "thread and slow down several-fold when the cores are shared with other processes)")
    parser.add_argument("--jobs", type=int, default=min(usable_cores(), 4),
                        help="SAE runs in parallel, one spawned worker process each (default: the CPU cores this "
                             "process may use, at most 4: %(default)s here); 1 runs everything in this process")
    parser.add_argument("--show-steps", action="store_true", help="show SAELens's per-step progress bars")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _apply_overrides(plan: SourcePlan, args: argparse.Namespace) -> SourcePlan:
    train_overrides = {name: getattr(args, name) for name in ("steps", "batch_size", "expansion", "lr")
                       if getattr(args, name) is not None}
    families = {family: dict(params) for family, params in plan.families.items()}
    for family, key, value in (("standard", "l1_coefficient", args.l1_coefficient), ("topk", "k", args.k),
                               ("batchtopk", "k", args.k)):
        if value is not None and family in families:
            families[family][key] = value
    data = plan.data
    if args.max_tokens is not None and isinstance(data, MiniLMSettings):
        data = dataclasses.replace(data, max_tokens=args.max_tokens)
    architecture_params = {name: {key: args.lr if key == "meta_lr" and args.lr is not None else value
                                  for key, value in params.items()}
                           for name, params in plan.architecture_params.items()}
    return SourcePlan(data=data, train=dataclasses.replace(plan.train, **train_overrides), families=families,
                      architecture_params=architecture_params)


def load_source(name: str, plan: SourcePlan, cache_dir: Path, progress: bool) -> ActivationSource:
    if isinstance(plan.data, SyntheticSettings):
        return synthetic_source(plan.data, n_train=plan.train.steps * plan.train.batch_size)
    return minilm_source(plan.data, cache_dir, progress=progress)


def _source_description(source: ActivationSource, plan: SourcePlan, arms: list[Arm]) -> str:
    info = source.info
    if source.name == "synthetic":
        data = (f"SAELens SyntheticModel: {info['num_features']} true features in {info['hidden_dim']} dims, Zipfian "
                f"firing p ∈ [{info['min_prob']}, {info['max_prob']}] (exponent {info['zipf_exponent']}, expected "
                f"true L0 {info['expected_true_l0']:.2f}); training pool {info['n_train']} samples")
    else:
        data = (f"all-MiniLM-L6-v2 `hidden_states[{info['layer']}]` on pydoc_data.topics text, rows of "
                f"{info['context']} tokens ([CLS]/[SEP]/padding dropped): {info['n_train_tokens']} training tokens "
                f"({info['n_rows'] - info['n_test_rows']} rows), {info['n_test_tokens']} held-out tokens "
                f"({info['n_test_rows']} rows)")
    train = plan.train
    families = "; ".join(f"{family}: {plan.family_params(family)}" for family in dict.fromkeys(a.family for a in arms))
    own = {arm.architecture: plan.architecture_params[arm.architecture] for arm in arms
           if arm.architecture in plan.architecture_params}
    if own:
        families += "; method settings (others at the architecture defaults): " + "; ".join(
            f"{name}: {params}" for name, params in own.items())
    return (f"- **{source.name}**: {data}. Held-out set = dead window: {source.test.shape[0]} activations. "
            f"d_in {source.d_in}, d_sae {train.expansion * source.d_in}; {train.steps} steps × batch "
            f"{train.batch_size}; Adam lr {train.lr} (warm-up {train.warmup_fraction:.0%}, linear decay to 0 over the "
            f"last {train.decay_fraction:.0%}); SAELens activation normalisation `expected_average_only_in`, dead "
            f"window for AuxK {train.dead_feature_window} steps; {families}.")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    unknown = sorted(set(args.sources) - set(SOURCES))
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; known: {', '.join(SOURCES)}")
    try:
        arms = select_arms(args.arms)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    seeds = list(range(args.seeds))
    if args.threads < 1 or args.jobs < 1:
        raise SystemExit("--threads and --jobs must be >= 1")
    import torch

    torch.set_num_threads(args.threads)
    base_plans = quick_plans() if args.quick else default_plans()
    plans = {name: _apply_overrides(base_plans[name], args) for name in SOURCES if name in args.sources}
    out: Path = args.out
    progress = not args.no_progress

    sources = {name: load_source(name, plan, out / "cache", progress) for name, plan in plans.items()}
    loaders = {name: partial(load_source, name, plan, out / "cache", False) for name, plan in plans.items()}
    tasks = [Task(name, arm.architecture, plan.params(arm), plan.train, seed)
             for name, plan in plans.items() for arm in arms for seed in seeds]
    for task in {(task.source, task.architecture): task for task in tasks}.values():  # fail before any training
        d_in = sources[task.source].d_in
        try:
            sae_config(task.architecture, d_in, task.settings.expansion * d_in, dict(task.params))
        except ValueError as error:
            raise SystemExit(f"{task.source} / {task.architecture}: {error}") from None
    results: dict[tuple[str, str, int], RunResult] = {}
    jobs = min(args.jobs, len(tasks))
    with tqdm(total=len(tasks), desc=f"SAE runs ({jobs} process{'es' if jobs > 1 else ''})", unit="run",
              disable=not progress) as bar:
        for task, result in run_grid(tasks, sources, loaders, jobs=jobs, threads=args.threads,
                                     show_steps=args.show_steps):
            results[task.source, task.architecture, task.seed] = result
            bar.set_postfix_str(f"{task.source}/{task.architecture}/seed {task.seed}")
            bar.update()

    runs: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    plots: list[str] = []
    for name, plan in plans.items():
        scores = {}
        for arm in arms:
            by_seed = {seed: results[name, arm.architecture, seed] for seed in seeds}
            runs += [{"source": name, "architecture": arm.architecture, "baseline": arm.baseline, "seed": seed,
                      "sae_params": plan.params(arm), **result.metrics} for seed, result in by_seed.items()]
            scores[arm.architecture] = {seed: result.alignment_scores for seed, result in by_seed.items()}
            summary.append({"source": name, "architecture": arm.architecture, "baseline": arm.baseline,
                            "seeds": seeds, "aggregate": aggregate([r.metrics for r in by_seed.values()]),
                            "stability": seed_pair_stability(by_seed, sign_invariant=arm.sign_invariant)})
        plots += [str(path) for path in write_histograms(out / "plots", name, scores)]

    wall = time.perf_counter() - started
    table = markdown_table(summary)
    command = "sae-aligned compare " + shlex.join(list(argv) if argv is not None else [])
    setup = "\n".join(_source_description(sources[name], plans[name], arms) for name in sources)
    write_text(out / "results.md", (
        f"# Baselines vs plugin architectures ({len(seeds)} seeds)\n\n"
        f"- command: `{command.strip()}`; date {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
        f"- wall time {wall:.0f} s (from the start of `main`; interpreter start-up and imports excluded) on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), {jobs} parallel run(s) of "
        f"{args.threads} torch thread(s)\n"
        f"- each plugin arm uses its baseline's hyperparameters (the aligned ones add none; iSAE and MetaSAE add their "
        f"method's settings, listed below where they differ from the architecture defaults)\n{setup}\n\n"
        f"{table}\n\n{TABLE_LEGEND}\n"
    ))
    write_json(out / "results.json", {
        "command": command.strip(),
        "wall_seconds": wall,
        "jobs": jobs,
        "threads": args.threads,
        "seeds": seeds,
        "arms": [dataclasses.asdict(arm) for arm in arms],
        "plans": {name: dataclasses.asdict(plan) for name, plan in plans.items()},
        "sources": {name: source.info for name, source in sources.items()},
        "runs": runs,
        "summary": summary,
        "plots": plots,
        "table_markdown": table,
    })
    print(table)
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'} and {len(plots)} plots under {out / 'plots'}")
    print(f"wall time: {time.perf_counter() - started:.1f} s (imports excluded)")
    return 0
