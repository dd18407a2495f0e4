"""End to end through SAELens's own runners, selected by name: LM runner (via `sae-aligned train`) and synthetic."""

from pathlib import Path

import pytest
import torch
import wandb.sdk.lib.noop_run as noop_run
from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, SyntheticSAERunner, SyntheticSAERunnerConfig
from sae_lens.synthetic.firing_probabilities import ZipfianFiringProbabilityConfig

from helpers import sae_deviation
from sae_aligned_plugin import cli
from sae_aligned_plugin.saelens import load_sae
from sae_aligned_plugin.training import offline_model_and_tokens, read_config, runner_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
TINY = Path(__file__).parents[1] / "configs" / "offline_tiny_aligned_topk.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = read_config(path)
    assert runner_config(config).sae.architecture() == config["sae"]["architecture"]


def test_cli_trains_by_name_with_saelens_runner_and_logs_alignment(tmp_path, monkeypatch):
    logged: list[dict] = []
    monkeypatch.setattr(noop_run.NoopRun, "log", lambda self, data, *a, **k: logged.append(dict(data)))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--config", str(TINY), "--output-path", str(tmp_path / "export")]) == 0

    sae = load_sae(tmp_path / "export")
    assert type(sae).__name__ == "TopKSAE" and sae.cfg.metadata.training_architecture == "aligned_topk"
    assert sae_deviation(sae) <= 1e-6
    steps = [row for row in logged if "metrics/alignment/max_abs_deviation" in row]
    assert len(steps) == 300 // 50
    assert max(row["metrics/alignment/max_abs_deviation"] for row in steps) < 1e-5
    assert all(0.0 <= row["metrics/dead_fraction"] <= 1.0 for row in steps)
    assert any("weights/alignment_score" in row for row in logged)       # histogram at eval steps

    # reconstruction on fresh activations of the same tiny model beats the untrained SAE by a wide margin
    config = read_config(TINY)
    model, tokens = offline_model_and_tokens(config["offline"], config["context_size"])
    ids = torch.tensor(tokens["input_ids"][:16])
    _, cache = model.run_with_cache(ids, names_filter=config["hook_name"])
    acts = cache[config["hook_name"]].reshape(-1, config["sae"]["d_in"])
    with torch.no_grad():
        error = (sae(acts) - acts).pow(2).sum(-1).mean()
        total = (acts - acts.mean(0)).pow(2).sum(-1).mean()
    explained_variance = 1 - float(error / total)
    assert explained_variance > 0.5, explained_variance


def test_synthetic_runner_by_name_recovers_true_features(tmp_path):
    model_cfg = SyntheticModelConfig(
        num_features=128, hidden_dim=32, seed=0, std_firing_magnitudes=0.1,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.05, min_prob=0.01))
    cfg = SyntheticSAERunnerConfig.from_dict({
        "synthetic_model": model_cfg, "sae": {"architecture": "aligned_topk", "d_in": 32, "d_sae": 128, "k": 4},
        "training_samples": 128_000, "batch_size": 256, "lr": 3e-3, "eval_samples": 20_000, "checkpoint_path": None,
        "output_path": str(tmp_path / "out"), "logger": {"log_to_wandb": False}})
    result = SyntheticSAERunner(cfg, override_synthetic_model=SyntheticModel(model_cfg)).run()
    assert result.sae.cfg.architecture() == "aligned_topk"
    assert sae_deviation(result.sae) <= 1e-6
    assert result.final_eval.mcc > 0.8, result.final_eval.mcc
    assert result.final_eval.explained_variance > 0.8
    exported = load_sae(tmp_path / "out")
    assert sae_deviation(exported) <= 1e-6
