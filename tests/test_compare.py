"""``sae-aligned compare --quick``: both data sources, every arm, two seeds; checks the numbers it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from sae_aligned_plugin.experiments.arms import ARMS
from sae_aligned_plugin.experiments.compare import SOURCES, main

SEEDS = (0, 1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("compare")
    assert main(["--quick", "--seeds", str(len(SEEDS)), "--sources", ",".join(SOURCES), "--out", str(out),
                 "--jobs", "2", "--no-progress"]) == 0
    return out, json.loads((out / "results.json").read_text())


def _runs(results: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(run["source"], run["architecture"], run["seed"]): run for run in results["runs"]}


def test_every_source_arm_and_seed_has_an_entry(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    expected = {(source, arm.architecture, seed) for source in SOURCES for arm in ARMS for seed in SEEDS}
    assert set(_runs(results)) == expected
    assert len(results["runs"]) == len(expected)
    assert {(row["source"], row["architecture"]) for row in results["summary"]} == {key[:2] for key in expected}


def test_aligned_arms_sit_at_one_and_baselines_do_not(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    baselines = {arm.architecture for arm in ARMS if arm.baseline is None}
    for (source, architecture, seed), run in _runs(results).items():
        alignment = run["alignment"]
        if architecture.startswith("aligned_"):
            assert alignment["max_abs_deviation_from_one"] <= 1e-6, (source, architecture, seed)
            assert alignment["raw_std"] < 1e-5
        elif architecture in baselines:
            assert alignment["raw_std"] > 0.01, (source, architecture, seed, alignment["raw_std"])
            assert alignment["max_abs_deviation_from_one"] > 1e-3


def test_arms_cover_the_three_methods_and_signed_arms_match_their_codes() -> None:
    import torch

    from sae_aligned_plugin.experiments.runs import build_sae
    from sae_aligned_plugin.saelens.registry import plugin_architectures

    compared = {arm.architecture for arm in ARMS}
    assert {"aligned_standard", "aligned_topk", "isae", "isae_me", "metasae_batchtopk"} <= compared
    assert compared - {arm.architecture for arm in ARMS if arm.baseline is None} <= set(plugin_architectures())
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    for arm in ARMS:
        assert arm.baseline is None or arm.baseline in compared
        sae = build_sae(arm.architecture, 16, 128, {"k": 4} if "k" in arm.family else {}, seed=0)
        with torch.no_grad():
            codes = sae.encode(x)
        assert bool((codes < 0).any()) == arm.sign_invariant, arm.architecture   # |cos| stability iff signed codes


def test_overrides_reach_every_family_and_the_meta_lr() -> None:
    from sae_aligned_plugin.experiments.compare import _apply_overrides, build_parser, default_plans

    plan = default_plans()["minilm"]
    args = build_parser().parse_args(["--k", "12", "--lr", "0.01", "--steps", "7", "--l1-coefficient", "0.5"])
    new = _apply_overrides(plan, args)
    by_name = {arm.architecture: arm for arm in ARMS}
    assert new.params(by_name["topk"])["k"] == new.params(by_name["metasae_batchtopk"])["k"] == 12
    assert new.params(by_name["metasae_batchtopk"])["meta_lr"] == new.train.lr == 0.01
    assert new.params(by_name["aligned_standard"]) == {"l1_coefficient": 0.5, "l1_warm_up_steps": 0}  # 5 % of 7
    assert new.train.steps == 7 and plan.train.steps == 500                                        # plan untouched
    unchanged = _apply_overrides(plan, build_parser().parse_args([]))
    assert unchanged.params(by_name["metasae_batchtopk"]) == plan.params(by_name["metasae_batchtopk"])


def test_pool_of_workers_gives_the_numbers_of_one_process(quick_run: tuple[Path, dict[str, Any]],
                                                          tmp_path: Path) -> None:
    """The fixture ran on a pool of spawned workers; one process must reproduce its runs exactly."""
    _, pooled = quick_run
    assert pooled["jobs"] >= 2
    assert main(["--quick", "--seeds", str(len(SEEDS)), "--sources", "synthetic", "--arms", "isae,metasae_batchtopk",
                 "--out", str(tmp_path), "--jobs", "1", "--no-progress"]) == 0
    alone = json.loads((tmp_path / "results.json").read_text())
    assert alone["jobs"] == 1
    pooled_runs = _runs(pooled)
    for key, run in _runs(alone).items():
        for metric in ("explained_variance", "l0", "dead_fraction", "mean_abs_phi", "mcc"):
            assert run[metric] == pooled_runs[key][metric], (key, metric)


def test_metrics_are_in_range(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    for key, run in _runs(results).items():
        assert math.isfinite(run["explained_variance"]) and -1.0 < run["explained_variance"] <= 1.0, key
        assert 0.0 <= run["dead_fraction"] <= 1.0, key
        assert run["dead_window_tokens"] == results["sources"][key[0]]["n_test_tokens" if key[0] == "minilm"
                                                                    else "n_test"]
        assert 0.0 <= run["l0"] <= run["sae_params"].get("k", math.inf), key
        assert 0.0 < run["mean_abs_phi"] < 1.0, key
        if key[0] == "synthetic":
            assert 0.0 <= run["mcc"] <= 1.0, key
        else:
            assert "mcc" not in run
    for row in results["summary"]:
        stability = row["stability"]
        assert len(stability["pairs"]) == 1  # two seeds: one pair
        signed = next(arm.sign_invariant for arm in ARMS if arm.architecture == row["architecture"])
        assert stability["sign_invariant"] == signed
        for name in ("decoder_mmcs", "encoder_mmcs", "hungarian_shared_fraction"):
            assert (0.0 if signed else -1.0) <= stability[name] <= 1.0, (row["source"], row["architecture"], name)


def test_minilm_cache_and_split(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    info = results["sources"]["minilm"]
    assert info["n_text_tokens"] == 1800  # the quick slice of text
    assert info["n_train_tokens"] + info["n_test_tokens"] == info["n_text_tokens"]  # [CLS]/[SEP]/padding dropped
    assert info["n_test_tokens"] > 0
    assert len(list((out / "cache").glob("minilm_*.safetensors"))) == 1


def test_plots_and_table(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    plots = [Path(path) for path in results["plots"]]
    assert len(plots) == len(SOURCES) * (len(ARMS) + 1)
    for path in plots:
        assert path.parent == out / "plots"
        assert path.read_bytes()[:8] == PNG_MAGIC
    table = (out / "results.md").read_text()
    for source in SOURCES:
        rows = [line for line in table.splitlines() if line.startswith(f"| {source} | ")]
        assert [row.split(" | ")[1] for row in rows] == [arm.architecture + (" ±" if arm.sign_invariant else "")
                                                         for arm in ARMS]
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporary files
