"""The grid of ``sae-aligned compare`` (one :class:`Task` per source × arm × seed), run in this process or on a pool
of worker processes.

Every run is deterministic given its task (the seed fixes the SAE init and the data order, see
:mod:`~sae_aligned_plugin.experiments.runs`), so a pool gives the same numbers as one process, only sooner: the
SAEs are small and gain little from a second torch thread, while separate processes use separate cores. Workers are
started with ``spawn`` (no fork after torch has started its thread pool); each loads the data sources once through
the picklable ``loaders`` (the MiniLM activations from the cache the parent wrote, the synthetic ones regenerated
from their seeds).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import torch

from sae_aligned_plugin.experiments.data import ActivationSource
from sae_aligned_plugin.experiments.runs import RunResult, TrainSettings, run_arm


@dataclass(frozen=True)
class Task:
    """One SAE run of the grid."""

    source: str
    architecture: str
    params: Mapping[str, Any]
    settings: TrainSettings
    seed: int


def usable_cores() -> int:
    """CPU cores this process may run on (affinity and cpusets respected where the OS tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_WORKER_SOURCES: dict[str, ActivationSource] = {}


def _start_worker(loaders: Mapping[str, Callable[[], ActivationSource]], threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER_SOURCES.update({name: load() for name, load in loaders.items()})


def _run_in_worker(task: Task, show_steps: bool) -> tuple[Task, RunResult]:
    return task, run_task(task, _WORKER_SOURCES[task.source], show_steps=show_steps)


def run_task(task: Task, source: ActivationSource, *, show_steps: bool = False) -> RunResult:
    return run_arm(task.architecture, dict(task.params), source, task.settings, task.seed, show_steps=show_steps)


def run_grid(tasks: Sequence[Task], sources: Mapping[str, ActivationSource],
             loaders: Mapping[str, Callable[[], ActivationSource]], *, jobs: int, threads: int,
             show_steps: bool = False) -> Iterator[tuple[Task, RunResult]]:
    """``(task, result)`` for every task, in completion order. ``jobs == 1``: in this process on ``sources``;
    otherwise on ``jobs`` spawned workers with ``threads`` torch threads each, whose sources come from ``loaders``."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1:
        for task in tasks:
            yield task, run_task(task, sources[task.source], show_steps=show_steps)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker,
                             initargs=(dict(loaders), threads)) as pool:
        futures = [pool.submit(_run_in_worker, task, show_steps) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # on an error or an abandoned generator: drop the queued runs, do not wait for them
            pool.shutdown(wait=False, cancel_futures=True)
