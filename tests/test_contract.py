"""The contract every architecture the plugin registers must meet (parametrised over the registry)."""

import json

import pytest
import torch
from sae_lens import SAE, LanguageModelSAERunnerConfig, SAEConfig, TrainingSAE, TrainingSAEConfig
from sae_lens.llm_sae_training_runner import _parse_cfg_args
from sae_lens.synthetic import SyntheticSAERunnerConfig

from helpers import sae_config_dict, step_input, train_steps
from sae_aligned_plugin import plugin_architectures
from sae_aligned_plugin.saelens import load_sae

ARCHITECTURES = plugin_architectures()


def test_every_plugin_architecture_is_registered_for_training_and_inference():
    from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

    assert len(ARCHITECTURES) >= 5
    for name in ARCHITECTURES:
        assert name in SAE_CLASS_REGISTRY and name in SAE_TRAINING_CLASS_REGISTRY


def test_import_is_idempotent():
    import importlib

    import sae_aligned_plugin

    sae_aligned_plugin.register()
    importlib.reload(sae_aligned_plugin)       # re-registration must not raise
    assert sae_aligned_plugin.plugin_architectures() == ARCHITECTURES


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_config_round_trips_through_dicts_and_json(name):
    cfg = TrainingSAEConfig.from_dict(sae_config_dict(name))
    assert cfg.architecture() == name
    as_json = json.loads(json.dumps(cfg.to_dict()))
    again = TrainingSAEConfig.from_dict(as_json)
    assert type(again) is type(cfg) and again.to_dict() == cfg.to_dict()
    inference = SAEConfig.from_dict(sae_config_dict(name))
    assert inference.architecture() == name
    assert SAEConfig.from_dict(inference.to_dict()).to_dict() == inference.to_dict()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_training_step_updates_every_parameter(name):
    sae = TrainingSAE.from_dict(TrainingSAEConfig.from_dict(sae_config_dict(name)).to_dict())
    before = {k: v.detach().clone() for k, v in sae.named_parameters()}
    losses = train_steps(sae, 3)
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = [k for k, v in sae.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert {"W_dec", "b_dec"} <= set(changed) and any("enc" in k for k in changed)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_save_and_load_round_trips_exactly(tmp_path, name):
    sae = TrainingSAE.from_dict(TrainingSAEConfig.from_dict(sae_config_dict(name)).to_dict())
    train_steps(sae, 5)
    x = torch.randn(32, 16)
    sae.save_model(tmp_path / "checkpoint")
    reloaded = load_sae(tmp_path / "checkpoint", training=True)
    assert type(reloaded) is type(sae)
    expected = sae.training_forward_pass(step_input(sae, x, step=5))
    actual = reloaded.training_forward_pass(step_input(reloaded, x, step=5))
    torch.testing.assert_close(actual.sae_out, expected.sae_out, rtol=0, atol=0)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=0, atol=0)
    sae.save_inference_model(tmp_path / "export")
    first, second = load_sae(tmp_path / "export"), SAE.load_from_disk(tmp_path / "export")
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_selectable_by_name_everywhere_saelens_takes_one(name):
    sae_dict = sae_config_dict(name)
    runner = LanguageModelSAERunnerConfig.from_dict({"sae": sae_dict, "logger": {"log_to_wandb": False},
                                                     "model_name": "tiny", "hook_name": "blocks.0.hook_resid_post"})
    assert runner.sae.architecture() == name
    assert LanguageModelSAERunnerConfig.from_dict(runner.to_dict()).sae.architecture() == name
    synthetic = SyntheticSAERunnerConfig.from_dict({
        "sae": sae_dict, "logger": {"log_to_wandb": False},
        "synthetic_model": {"num_features": 32, "hidden_dim": 16,
                            "firing_probability": {"generator_name": "zipfian", "exponent": 0.5,
                                                   "max_prob": 0.1, "min_prob": 0.01}}})
    assert synthetic.sae.architecture() == name
    flags = [str(part) for key, value in sae_dict.items() if key != "architecture"
             for part in (f"--{key}", *(value if isinstance(value, list) else [value]))]
    cli = _parse_cfg_args(["--architecture", name, *flags, "--model_name", "tiny",
                           "--hook_name", "blocks.0.hook_resid_post"])
    assert cli.sae.architecture() == name and cli.sae.d_sae == 64
    assert SAE.from_dict(sae_dict).cfg.architecture() == name
