"""Bad input gets a clear error, and nothing is lost or half-written."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file
from sae_lens import TrainingSAEConfig

from helpers import make_sae, sae_config_dict, step_input
from sae_aligned_plugin import cli
from sae_aligned_plugin.saelens import CheckpointError, UnknownArchitectureError, get_training_class, load_sae
from sae_aligned_plugin.training import read_config
from sae_aligned_plugin.validation import ConfigError


def _params(sae):
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


@pytest.mark.parametrize("name", ["aligned_topk", "aligned_standard"])
def test_wrong_activation_width_is_named(name):
    sae = make_sae(name)
    for call in (lambda x: sae.training_forward_pass(step_input(sae, x)), sae.encode, sae.forward):
        with pytest.raises(ValueError, match=r"d_in=16.*last dimension 17"):
            call(torch.randn(4, 17))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_activations_stop_before_any_update(bad):
    sae = make_sae("aligned_topk")
    before = _params(sae)
    x = torch.randn(8, 16)
    x[3, 5] = bad
    with pytest.raises(ValueError, match="non-finite activations"):
        sae.training_forward_pass(step_input(sae, x))
    assert all(torch.equal(before[k], v) for k, v in _params(sae).items())


@pytest.mark.parametrize("name,override,match", [
    ("aligned_topk", {"k": 65}, r"0 < k <= d_sae \(=64\), got k=65"),
    ("aligned_batchtopk", {"k": 0}, "got k=0"),
    ("aligned_standard", {"l1_coefficient": -0.1}, "l1_coefficient must be non-negative"),
    ("aligned_topk", {"aux_loss_coefficient": -1.0}, "aux_loss_coefficient must be non-negative"),
    ("aligned_jumprelu", {"l0_coefficient": -2.0}, "l0_coefficient must be non-negative"),
    ("aligned_topk", {"d_sae": 0, "k": 0}, "d_sae must be positive"),
])
def test_impossible_configs_are_rejected(name, override, match):
    with pytest.raises(ConfigError, match=match):
        TrainingSAEConfig.from_dict(sae_config_dict(name, **override))


def test_unknown_architecture_lists_the_registered_ones(tmp_path):
    with pytest.raises(UnknownArchitectureError) as error:
        get_training_class("aligned_topkk")
    assert "aligned_topk" in str(error.value) and "batchtopk" in str(error.value)
    config = tmp_path / "bad.yaml"
    config.write_text("sae: {architecture: algned_topk, d_in: 8, d_sae: 16}\nlogger: {log_to_wandb: false}\n"
                      f"output_path: {tmp_path / 'never'}\n")
    with pytest.raises(UnknownArchitectureError, match="Registered architectures: .*aligned_standard"):
        cli.main(["train", "--config", str(config)])
    assert not (tmp_path / "never").exists()


def test_typo_in_sae_config_key_is_an_error_not_a_silent_default():
    with pytest.raises(ValueError, match=r"unknown keys .*\['kk'\]"):
        read_config({"sae": {"architecture": "aligned_topk", "d_in": 8, "d_sae": 16, "kk": 4}})


def test_checkpoint_errors_are_clear(tmp_path):
    sae = make_sae("aligned_topk")
    good = tmp_path / "good"
    sae.save_inference_model(good)
    assert load_sae(good).cfg.d_sae == 64

    with pytest.raises(CheckpointError, match="not a directory"):
        load_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no cfg.json"):
        load_sae(tmp_path / "empty")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "cfg.json").write_text((good / "cfg.json").read_text())
    data = (good / "sae_weights.safetensors").read_bytes()
    (corrupt / "sae_weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_sae(corrupt)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "cfg.json").write_text((good / "cfg.json").read_text())
    (pickled / "sae_weights.safetensors").write_bytes(pickle.dumps({"W_dec": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="pickle, which is refused"):
        load_sae(pickled)
    (pickled / "sae_weights.safetensors").unlink()
    torch.save({"W_dec": torch.zeros(2)}, pickled / "ae.pt")
    with pytest.raises(CheckpointError, match=r"ae.pt.*pickled checkpoints are not loaded"):
        load_sae(pickled)

    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "cfg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        load_sae(bad_json)

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "cfg.json").write_text(json.dumps({**json.loads((good / "cfg.json").read_text()),
                                                  "architecture": "someone_elses_sae"}))
    save_file({"W_dec": torch.zeros(2)}, unknown / "sae_weights.safetensors")
    with pytest.raises(UnknownArchitectureError, match="someone_elses_sae.*Registered: .*aligned_topk"):
        load_sae(unknown)


def test_typo_in_runner_config_key_is_an_error():
    with pytest.raises(ValueError, match=r"unknown top-level config keys: \['trainig_tokens'\]"):
        read_config({"sae": {"architecture": "aligned_topk", "d_in": 8, "d_sae": 16, "k": 4}, "trainig_tokens": 10})
