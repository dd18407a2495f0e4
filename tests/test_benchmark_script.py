"""``benchmarks/step_time.py`` at toy shapes: which pairs it times, over how many steps, against which targets.
Nothing here asserts on a timing (that is the benchmark's job, not a unit test's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import step_time  # noqa: E402

TOY = ["--d-in", "16", "--d-sae", "128", "--batch", "32", "--k", "4", "--steps", "2", "--warmup", "1",
       "--bootstrap", "10", "--no-write", "--no-progress"]


@pytest.fixture(scope="module")
def report() -> dict:
    pairs = "aligned_topk:topk,isae_me:topk,metasae_batchtopk:batchtopk"
    return step_time.main([*TOY, "--pairs", pairs])


def test_default_pairs_cover_every_method() -> None:
    candidates = {candidate for candidate, _ in step_time.parse_pairs(step_time.DEFAULT_PAIRS)}
    assert {"aligned_standard", "aligned_topk", "isae", "isae_me", "metasae_batchtopk"} <= candidates


def test_metasae_is_timed_over_its_schedule_period_and_others_per_step(report) -> None:
    by_candidate = {row["candidate"]: row for row in report["results"]}
    assert by_candidate["metasae_batchtopk"]["steps_per_sample"] == 10          # n_primary_steps: one meta phase
    assert by_candidate["aligned_topk"]["steps_per_sample"] == 1
    for row in report["results"]:
        assert len(row["candidate_arm"]["times_ms"]) == len(row["base_arm"]["times_ms"]) == 2


def test_targets_come_per_candidate_and_isae_me_has_none(report) -> None:
    by_candidate = {row["candidate"]: row for row in report["results"]}
    assert (by_candidate["aligned_topk"]["time_target"], by_candidate["aligned_topk"]["memory_target"]) == (1.03, 1.10)
    assert by_candidate["metasae_batchtopk"]["time_target"] == 1.15
    isae_me = by_candidate["isae_me"]
    assert isae_me["time_target"] is None and isae_me["meets_time_target"] is None
    assert step_time.verdict(isae_me, steps=30) == "no target (measured)"
    table = step_time.markdown(report["meta"], report["results"])
    assert "| isae_me vs topk | 0 | 1 |" in table and "| — / — | no target (measured) (provisional" in table
    assert "| metasae_batchtopk vs batchtopk | 0 | 10 |" in table and "| ≤ 1.15× / ≤ 1.10× |" in table


def test_one_target_for_every_pair_and_bad_sample_sizes() -> None:
    forced = step_time.main([*TOY, "--pairs", "isae_me:topk", "--time-target", "9", "--memory-target", "9"])
    row = forced["results"][0]
    assert (row["time_target"], row["memory_target"]) == (9.0, 9.0)
    assert row["meets_time_target"] == (row["time_ratio"] <= 9.0)
    with pytest.raises(SystemExit, match="steps-per-sample must be"):
        step_time.main([*TOY, "--pairs", "isae:topk", "--steps-per-sample", "0"])
