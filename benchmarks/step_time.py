#!/usr/bin/env python
"""Step time and peak memory of candidate SAELens training architectures against their bases.

For every ``candidate:base`` pair (default: the five aligned architectures, iSAE, iSAE-ME and MetaSAE against
their SAELens bases)
and every dead-latent fraction, both arms are built from the same seed, fed the same batches at the same
dead-neuron mask, warmed up, and then timed **interleaved** (base, candidate, base, candidate, ...), so slow
drifts of a shared machine hit both arms alike. One step is::

    sae.training_forward_pass(TrainStepInput(...)); loss.backward(); adam.step(); adam.zero_grad()

Reported per pair: the median step time of each arm, the ratio candidate/base of the medians with a paired
bootstrap 95 % interval and the min–max of the per-pair ratios, and the peak memory of one step per arm
(resident tensors + transient peak; see ``benchmarks/README.md``). Results go to ``results.md`` and
``results.json`` (written atomically). Usage: ``python benchmarks/step_time.py --help``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sae_lens import TrainingSAE, TrainingSAEConfig
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput
from tqdm import tqdm

from sae_aligned_plugin.experiments.grid import usable_cores

ALIGNED_BASES = ("standard", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk")
DEFAULT_PAIRS = ",".join([*(f"aligned_{base}:{base}" for base in ALIGNED_BASES),
                          "isae:topk", "isae_me:topk", "metasae_batchtopk:batchtopk"])
TIME_TARGET = 1.03
MEMORY_TARGET = 1.10
TARGETS: dict[str, tuple[float | None, float | None]] = {
    "isae": (1.10, MEMORY_TARGET), "isae_me": (None, None),
    "metasae_batchtopk": (1.15, MEMORY_TARGET), "metasae_topk": (1.15, MEMORY_TARGET),
    "aligned_metasae_batchtopk": (1.15, MEMORY_TARGET),
}
"""(time, memory) ratio targets of the candidates that are not aligned architectures (those have ``TIME_TARGET``,
``MEMORY_TARGET``), from the project's issues; ``None``: measured and explained, no target."""
MIN_STEPS_FOR_VERDICT = 20
MIB = 2**20
HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------------- arguments


def _csv(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        return [kind(item) for item in text.split(",") if item.strip()]

    return parse


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``"cand:base,cand2:base2"`` -> ``[(cand, base), (cand2, base2)]``."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        candidate, sep, base = item.strip().partition(":")
        if not sep or not candidate or not base:
            raise argparse.ArgumentTypeError(f"pair {item!r} is not CANDIDATE:BASE")
        pairs.append((candidate, base))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pairs", type=parse_pairs, default=parse_pairs(DEFAULT_PAIRS),
                   help="comma-separated CANDIDATE:BASE registered architecture names")
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1024, help="tokens per step")
    p.add_argument("--k", type=int, default=64, help="k of the TopK-family architectures (ignored by others)")
    p.add_argument("--matryoshka-widths", type=_csv(int), default=None,
                   help="matryoshka widths (default d_sae/8, d_sae/4, d_sae/2, d_sae)")
    p.add_argument("--config-json", type=json.loads, default={},
                   help="extra TrainingSAEConfig fields applied to both arms, as a JSON object")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--threads", type=int, default=usable_cores(), help="torch.set_num_threads")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
    p.add_argument("--steps", type=int, default=30, help="timed samples per arm")
    p.add_argument("--steps-per-sample", type=int, default=None,
                   help="consecutive steps per timed sample, reported per step (default: the candidate's schedule "
                        "period, so a periodic cost is amortised: MetaSAE's n_primary_steps, else 1). Memory is the "
                        "max over that many steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per arm before timing")
    p.add_argument("--time-target", type=float, default=None,
                   help=f"time ratio target for every pair (default: per candidate, {TIME_TARGET} for the aligned "
                        "ones, see TARGETS)")
    p.add_argument("--memory-target", type=float, default=None,
                   help=f"memory ratio target for every pair (default: per candidate, {MEMORY_TARGET} for the "
                        "aligned ones, see TARGETS)")
    p.add_argument("--dead-fraction", type=_csv(float), default=[0.0],
                   help="comma-separated fractions of latents marked dead (e.g. 0,0.5); AuxK is on when > 0")
    p.add_argument("--order", choices=["abab", "abba"], default="abab",
                   help="abab: base first in every pair of steps; abba: the leading arm alternates")
    p.add_argument("--n-batches", type=int, default=4, help="distinct random batches, cycled, same for both arms")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the interleaved pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--import-module", action="append", default=None, metavar="MODULE",
                   help="module(s) that register the architectures (default: sae_aligned_plugin)")
    p.add_argument("--profile-ops", type=int, default=0, metavar="N",
                   help="after timing, print the N most expensive ops of one profiled step per arm")
    p.add_argument("--output-dir", type=Path, default=HERE, help="where results.md and results.json go")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


# ----------------------------------------------------------------------------------------------- one arm


@dataclass
class Arm:
    """One architecture under test: its SAE, its Adam, and what was measured."""

    architecture: str
    sae: Any
    optimizer: torch.optim.Optimizer
    coefficients: dict[str, float]
    n_steps: int = 0
    times_s: list[float] = field(default_factory=list)

    def step(self, sae_in: torch.Tensor, dead_mask: torch.Tensor) -> None:
        """One training step: forward (SAELens TrainStepInput), backward, Adam step, zero_grad."""
        output = self.sae.training_forward_pass(TrainStepInput(
            sae_in=sae_in, coefficients=self.coefficients, dead_neuron_mask=dead_mask,
            n_training_steps=self.n_steps, is_logging_step=False,
        ))
        output.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.n_steps += 1

    def resident_bytes(self, *extra: torch.Tensor) -> int:
        """Bytes of the tensors that live across steps: parameters, buffers, Adam state, and ``extra``."""
        state = [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        storages = {}
        for tensor in [*self.sae.parameters(), *self.sae.buffers(), *state, *extra]:
            storage = tensor.untyped_storage()
            storages[(storage.device, storage.data_ptr())] = storage.nbytes()
        return sum(storages.values())


def schedule_period(sae: Any) -> int:
    """Steps after which the architecture's per-step cost repeats: MetaSAE's ``n_primary_steps`` (one meta phase per
    period), 1 for everything else."""
    return int(getattr(sae.cfg, "n_primary_steps", 1))


def build_arm(architecture: str, args: argparse.Namespace, device: torch.device) -> Arm:
    """Build ``architecture`` by name through SAELens's registry; the same seed gives both arms the same init."""
    widths = args.matryoshka_widths or [args.d_sae // 8, args.d_sae // 4, args.d_sae // 2, args.d_sae]
    torch.manual_seed(args.seed)
    cfg = TrainingSAEConfig.from_dict({  # from_dict keeps only the fields the architecture's config has
        "architecture": architecture, "d_in": args.d_in, "d_sae": args.d_sae, "k": args.k,
        "matryoshka_widths": widths, "dtype": args.dtype, "device": str(device), **args.config_json,
    })
    sae = TrainingSAE.from_dict(cfg.to_dict()).to(device)
    sae.train()
    coefficients = {name: value.value if isinstance(value, TrainCoefficientConfig) else float(value)
                    for name, value in sae.get_coefficients().items()}
    return Arm(architecture, sae, torch.optim.Adam(sae.parameters(), lr=args.lr), coefficients)


# ----------------------------------------------------------------------------------------------- measurement


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(arm: Arm, batches: Sequence[torch.Tensor], dead_mask: torch.Tensor, device: torch.device) -> None:
    """Time ``len(batches)`` consecutive steps as one sample; record the mean time per step."""
    synchronize(device)
    start = time.perf_counter()
    for sae_in in batches:
        arm.step(sae_in, dead_mask)
    synchronize(device)
    arm.times_s.append((time.perf_counter() - start) / len(batches))


def transient_peak_bytes(arm: Arm, sae_in: torch.Tensor, dead_mask: torch.Tensor, device: torch.device) -> int:
    """Peak bytes allocated during one step above what was allocated just before it.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` before.
    CPU: the maximum of the running sum of the allocation (+) and free (−) events that ``torch.profiler``
    records from the c10 CPU allocator during the step (library-internal scratch, e.g. oneDNN/MKL
    workspaces, is not seen).
    """
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        arm.step(sae_in, dead_mask)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        arm.step(sae_in, dead_mask)
    events = [(e.start_ns(), i, e.nbytes()) for i, e in enumerate(prof.profiler.kineto_results.events())
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    running = peak = 0
    for _, _, nbytes in sorted(events):
        running += nbytes
        peak = max(peak, running)
    return peak


def print_op_profile(arm: Arm, sae_in: torch.Tensor, dead_mask: torch.Tensor, device: torch.device, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        arm.step(sae_in, dead_mask)
        synchronize(device)
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    tqdm.write(f"\n### ops of one step: {arm.architecture}\n"
               + prof.key_averages().table(sort_by=sort_by, row_limit=top))


def ratio_stats(base_s: Sequence[float], cand_s: Sequence[float], n_boot: int, seed: int) -> dict[str, float]:
    """Ratio of medians, its paired bootstrap 95 % interval, and the range of the per-pair ratios."""
    base, cand = np.asarray(base_s), np.asarray(cand_s)
    pairwise = cand / base
    stats = {"time_ratio": float(np.median(cand) / np.median(base)),
             "pairwise_ratio_median": float(np.median(pairwise)),
             "pairwise_ratio_min": float(pairwise.min()), "pairwise_ratio_max": float(pairwise.max())}
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, len(base), size=(n_boot, len(base)))
        boot = np.median(cand[idx], axis=1) / np.median(base[idx], axis=1)
        stats["time_ratio_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return stats


def arm_summary(arm: Arm, resident: int, transient: int) -> dict[str, Any]:
    return {"architecture": arm.architecture, "median_ms": 1e3 * float(np.median(arm.times_s)),
            "times_ms": [1e3 * t for t in arm.times_s], "resident_bytes": resident,
            "transient_peak_bytes": transient, "peak_bytes": resident + transient}


def run_pair(candidate: str, base: str, dead_fraction: float, args: argparse.Namespace, device: torch.device,
             batches: list[torch.Tensor], bar: tqdm) -> dict[str, Any]:
    """Warm up, time interleaved, then measure memory, for one pair at one dead fraction."""
    arms = {"base": build_arm(base, args, device), "candidate": build_arm(candidate, args, device)}
    generator = torch.Generator().manual_seed(args.seed + 1)
    dead_mask = torch.zeros(args.d_sae, dtype=torch.bool)
    dead_mask[torch.randperm(args.d_sae, generator=generator)[: round(dead_fraction * args.d_sae)]] = True
    dead_mask = dead_mask.to(device)
    bar.set_description(f"{candidate} vs {base}, dead {dead_fraction:g}")

    for i in range(args.warmup):
        for arm in arms.values():
            arm.step(batches[i % len(batches)], dead_mask)
            bar.update()
    per = args.steps_per_sample if args.steps_per_sample is not None else schedule_period(arms["candidate"].sae)
    for i in range(args.steps):
        order = ("base", "candidate") if args.order == "abab" or i % 2 == 0 else ("candidate", "base")
        sample = [batches[(args.warmup + i * per + j) % len(batches)] for j in range(per)]
        for name in order:
            timed_step(arms[name], sample, dead_mask, device)
            bar.update()

    summaries = {}
    for name, arm in arms.items():
        transient = max(transient_peak_bytes(arm, batches[j % len(batches)], dead_mask, device) for j in range(per))
        summaries[name] = arm_summary(arm, arm.resident_bytes(batches[0], dead_mask), transient)
        bar.update()
        if args.profile_ops:
            print_op_profile(arm, batches[0], dead_mask, device, args.profile_ops)

    b, c = summaries["base"], summaries["candidate"]
    result = {"candidate": candidate, "base": base, "dead_fraction": dead_fraction,
              "n_dead": int(dead_mask.sum()), "base_arm": b, "candidate_arm": c,
              **ratio_stats(arms["base"].times_s, arms["candidate"].times_s, args.bootstrap, args.seed),
              "memory_ratio": c["peak_bytes"] / b["peak_bytes"],
              "transient_memory_ratio": c["transient_peak_bytes"] / max(b["transient_peak_bytes"], 1)}
    default_time, default_memory = TARGETS.get(candidate, (TIME_TARGET, MEMORY_TARGET))
    time_target = default_time if args.time_target is None else args.time_target
    memory_target = default_memory if args.memory_target is None else args.memory_target
    result.update(steps_per_sample=per, time_target=time_target, memory_target=memory_target,
                  meets_time_target=None if time_target is None else result["time_ratio"] <= time_target,
                  meets_memory_target=None if memory_target is None else result["memory_ratio"] <= memory_target)
    del arms
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------------------------------- reporting


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def collect_meta(args: argparse.Namespace, device: torch.device, argv: Sequence[str]) -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{device} ({device_name(device)})", "torch": torch.__version__,
        "sae_lens": version("sae-lens"), "sae_aligned_plugin": version("sae-aligned-plugin"),
        "python": platform.python_version(), "git": git_revision(), "threads": torch.get_num_threads(),
        "cpu_count": usable_cores(), "load_average_start": list(os.getloadavg()),
        "d_in": args.d_in, "d_sae": args.d_sae, "batch": args.batch, "k": args.k, "dtype": args.dtype,
        "matryoshka_widths": args.matryoshka_widths or [args.d_sae // 8, args.d_sae // 4, args.d_sae // 2, args.d_sae],
        "config_json": args.config_json, "lr": args.lr, "steps": args.steps, "warmup": args.warmup,
        "steps_per_sample": args.steps_per_sample,
        "order": args.order, "n_batches": args.n_batches, "bootstrap": args.bootstrap, "seed": args.seed,
        "memory_method": ("torch.cuda max_memory_allocated" if device.type == "cuda"
                          else "torch.profiler CPU allocator events, running-sum peak"),
        "targets": {"time_ratio": args.time_target, "memory_ratio": args.memory_target},  # None: per pair
        "argv": list(argv),
    }


def verdict(result: dict[str, Any], steps: int) -> str:
    failed = [name for name, ok in (("time", result["meets_time_target"]), ("memory", result["meets_memory_target"]))
              if ok is False]
    text = "yes" if not failed else "NO: " + ", ".join(failed)
    if result["meets_time_target"] is None and result["meets_memory_target"] is None:
        text = "no target (measured)"
    return text + (f" (provisional: < {MIN_STEPS_FOR_VERDICT} steps)" if steps < MIN_STEPS_FOR_VERDICT else "")


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    mib = lambda n: f"{n / MIB:.1f}"  # noqa: E731
    head = [
        "# Step-time benchmark: candidate vs base SAELens architectures",
        "",
        f"- date: {meta['date']}; git {meta['git']}",
        f"- device: {meta['device']}; threads {meta['threads']} of {meta['cpu_count']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in meta['load_average_start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in meta['load_average_end'])}",
        f"- torch {meta['torch']}, sae-lens {meta['sae_lens']}, sae-aligned-plugin {meta['sae_aligned_plugin']}, "
        f"python {meta['python']}",
        f"- shapes: d_in {meta['d_in']}, d_sae {meta['d_sae']}, batch {meta['batch']}, k {meta['k']}, "
        f"{meta['dtype']}; matryoshka widths {meta['matryoshka_widths']}"
        + (f"; config overrides {json.dumps(meta['config_json'])}" if meta["config_json"] else ""),
        f"- step = training_forward_pass + backward + Adam(lr {meta['lr']}).step + zero_grad; "
        f"{meta['warmup']} warm-up steps then {meta['steps']} timed samples per arm, interleaved ({meta['order']}); "
        "a sample is 'steps / sample' consecutive steps (the candidate's schedule period, so a periodic cost is "
        "amortised: MetaSAE's n_primary_steps, which contain one meta phase; 1 otherwise; or --steps-per-sample), "
        "reported per step; "
        f"{meta['n_batches']} batches cycled, seed {meta['seed']}",
        f"- time ratio = median(candidate) / median(base); range = paired bootstrap 95 % interval "
        f"({meta['bootstrap']} resamples) [min–max of per-pair ratios]",
        f"- peak memory = resident (params, buffers, Adam state, batch, mask) + transient peak of one step "
        f"({meta['memory_method']}); transient in parentheses",
        "- targets (time / memory ratio): per pair, in the 'targets' column (`TARGETS` in step_time.py, "
        f"{TIME_TARGET:.2f}× / {MEMORY_TARGET:.2f}× for the aligned architectures; --time-target / --memory-target "
        "set one for every pair)",
        f"- command: `{' '.join(meta['argv']) or '(defaults)'}`",
        "",
        "| candidate vs base | dead | steps / sample | base median ms | candidate median ms | time ratio "
        "| ratio range | base peak MiB | candidate peak MiB | memory ratio | targets | meets targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for r in results:
        b, c = r["base_arm"], r["candidate_arm"]
        ci = r.get("time_ratio_ci95")
        ci_text = f"{ci[0]:.3f}–{ci[1]:.3f} " if ci else ""
        targets = " / ".join("—" if t is None else f"≤ {t:.2f}×" for t in (r["time_target"], r["memory_target"]))
        rows.append(
            f"| {r['candidate']} vs {r['base']} | {r['dead_fraction']:g} | {r['steps_per_sample']} "
            f"| {b['median_ms']:.1f} | {c['median_ms']:.1f} "
            f"| {r['time_ratio']:.3f} | {ci_text}[{r['pairwise_ratio_min']:.3f}–{r['pairwise_ratio_max']:.3f}] "
            f"| {mib(b['peak_bytes'])} ({mib(b['transient_peak_bytes'])}) "
            f"| {mib(c['peak_bytes'])} ({mib(c['transient_peak_bytes'])}) | {r['memory_ratio']:.3f} | {targets} "
            f"| {verdict(r, meta['steps'])} |")
    return "\n".join(head + rows) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------- entry point


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    return device


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"meta": ..., "results": [...]}`` (also written unless ``--no-write``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.n_batches < 1 or (args.steps_per_sample is not None and args.steps_per_sample < 1):
        raise SystemExit("--steps and --steps-per-sample must be ≥ 1, --warmup ≥ 0, --n-batches ≥ 1")
    for module in args.import_module or ["sae_aligned_plugin"]:
        importlib.import_module(module)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    meta = collect_meta(args, device, argv)
    if args.steps < MIN_STEPS_FOR_VERDICT:
        print(f"warning: {args.steps} timed steps per arm < {MIN_STEPS_FOR_VERDICT}: ratios are provisional",
              file=sys.stderr)

    generator = torch.Generator().manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    batches = [torch.randn(args.batch, args.d_in, generator=generator).to(device=device, dtype=dtype)
               for _ in range(args.n_batches)]
    per_pair = 2 * (args.warmup + args.steps + 1)  # one bar tick per timed sample
    results = []
    with tqdm(total=per_pair * len(args.pairs) * len(args.dead_fraction), unit="step",
              disable=args.no_progress) as bar:
        for dead_fraction in args.dead_fraction:
            for candidate, base in args.pairs:
                results.append(run_pair(candidate, base, dead_fraction, args, device, batches, bar))

    meta["load_average_end"] = list(os.getloadavg())
    report = {"meta": meta, "results": results}
    table = markdown(meta, results)
    print(table)
    if not args.no_write:
        write_atomic(args.output_dir / "results.json", json.dumps(report, indent=2) + "\n")
        write_atomic(args.output_dir / "results.md", table)
        print(f"wrote {args.output_dir / 'results.md'} and {args.output_dir / 'results.json'}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
