"""``sae-aligned diagnose`` on a plain SAELens ``standard`` SAE (no plugin class involved) and on an aligned one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import make_sae, train_steps
from sae_aligned_plugin import cli
from sae_aligned_plugin.diagnose import diagnose
from sae_aligned_plugin.metrics import alignment_report, cross_seed_stability
from sae_aligned_plugin.saelens import load_sae

TINY_CONFIG = Path(__file__).parents[1] / "configs" / "offline_tiny_aligned_topk.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def standard_folder(folder: Path, seed: int, dead: int = 0) -> Path:
    """A trained SAELens ``standard`` SAE (d_in 64, d_sae 128) saved with SAELens's own export, plus a
    ``sparsity.safetensors`` in which ``dead`` latents never fired."""
    torch.manual_seed(seed)
    sae = make_sae("standard", d_in=64, d_sae=128)
    train_steps(sae, 30, seed=seed)
    sae.save_inference_model(folder)
    log_sparsity = torch.full((128,), -2.5)
    log_sparsity[:dead] = -10.0                            # SAELens: log10(0 + 1e-10)
    save_file({"sparsity": log_sparsity}, str(folder / "sparsity.safetensors"))
    return folder


def test_cli_diagnose_plain_saelens_sae_with_activations_and_comparison(tmp_path, capsys):
    first, second = standard_folder(tmp_path / "a", 0, dead=5), standard_folder(tmp_path / "b", 1)
    acts = torch.randn(1000, 64) * 2.0
    save_file({"activations": acts}, str(tmp_path / "acts.safetensors"))
    assert cli.main(["diagnose", str(first), "--output", str(tmp_path / "out"), "--activations",
                     str(tmp_path / "acts.safetensors"), "--compare", str(second)]) == 0

    report = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    sae, other = load_sae(first), load_sae(second)
    assert type(sae).__name__ == "StandardSAE"
    assert report["sae"]["architecture"] == report["sae"]["training_architecture"] == "standard"
    assert report["alignment"] == pytest.approx(alignment_report(sae).summary())
    assert report["alignment"]["max_abs_deviation_from_one"] > 1e-3          # an unconstrained SAE
    with torch.no_grad():
        alive = (sae.encode(acts) != 0).any(0)
    assert report["dead"]["n_tokens"] == 1000
    assert report["dead"]["fraction_dead"] == pytest.approx(1.0 - float(alive.float().mean()))
    assert report["training_sparsity"]["n_dead"] == 5.0
    assert report["training_sparsity"]["fraction_dead"] == pytest.approx(5 / 128)
    expected = cross_seed_stability(sae, other).summary()
    assert {k: v for k, v in report["stability"].items() if k != "other"} == pytest.approx(expected)
    assert report["stability"]["other"] == "b" and report["other"]["d_sae"] == 128
    assert report["plots"] == ["alignment_histogram.png", "stability_max_cosine.png"]
    for name in report["plots"]:
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000
    printed = capsys.readouterr().out
    assert '"raw_mean"' in printed and "diagnostics.json" in printed


def test_diagnose_aligned_sae_against_itself(tmp_path):
    sae = make_sae("aligned_topk", d_in=64, d_sae=128)
    train_steps(sae, 20)
    report = diagnose(sae, tmp_path, name="aligned", other=sae, other_name="same")
    assert report["alignment"]["max_abs_deviation_from_one"] <= 1e-6
    assert report["alignment"]["bimodality_raw"] == 0.0                     # a spike at 1 is not bimodal
    assert report["stability"]["decoder_mmcs_ab"] == pytest.approx(1.0, abs=1e-6)
    assert report["stability"]["hungarian_shared_fraction"] == 1.0
    assert report["dead"] is None and report["training_sparsity"] is None
    assert json.loads((tmp_path / "diagnostics.json").read_text())["stability"]["other"] == "same"


def test_cli_diagnose_dead_fraction_on_the_offline_model(tmp_path):
    sae = make_sae("standard", d_in=64, d_sae=128)
    sae.cfg.metadata.hook_name, sae.cfg.metadata.context_size = "blocks.1.hook_resid_post", 32
    sae.save_inference_model(tmp_path / "sae")
    assert cli.main(["diagnose", str(tmp_path / "sae"), "--output", str(tmp_path / "out"), "--offline-config",
                     str(TINY_CONFIG), "--n-rows", "16"]) == 0
    report = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert report["dead"]["n_tokens"] == 16 * 32 and 0.0 <= report["dead"]["fraction_dead"] < 1.0
    assert report["sae"]["hook_name"] == "blocks.1.hook_resid_post"


def test_diagnose_bad_input(tmp_path):
    folder = standard_folder(tmp_path / "a", 0)
    save_file({"activations": torch.randn(10, 32)}, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(SystemExit, match="activation width mismatch: the SAE expects d_in=64"):
        cli.main(["diagnose", str(folder), "--output", str(tmp_path / "out"), "--activations",
                  str(tmp_path / "narrow.safetensors")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no cfg.json"):
        cli.main(["diagnose", str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="hook_name and context_size"):
        cli.main(["diagnose", str(folder), "--output", str(tmp_path / "out"), "--offline-config", str(TINY_CONFIG)])
