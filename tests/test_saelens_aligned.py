"""Aligned SAELens architectures: spec checks 1-8 on the real classes, folds, export, logging."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sae_lens import SAE, TrainingSAE
from sae_lens.registry import get_sae_training_class

from helpers import ALIGNED, make_sae, sae_deviation, step_input, train_steps
from sae_aligned_plugin.saelens import ALIGNED_FAMILIES


def _base_twin(sae: TrainingSAE) -> TrainingSAE:
    """The SAELens base architecture with the aligned SAE's weights (``W_enc`` materialised)."""
    base_name = ALIGNED_FAMILIES[sae.cfg.architecture()].base
    base_cls, base_cfg_cls = get_sae_training_class(base_name)
    config = {**sae.cfg.to_dict(), "architecture": base_name}
    twin = base_cls(base_cfg_cls.from_dict(config))
    state = {k: v for k, v in sae.state_dict().items() if k != "W_enc_free"}
    twin.load_state_dict({**state, "W_enc": sae.W_enc.detach().clone()})
    return twin


@pytest.mark.parametrize("name", ALIGNED)
def test_constraint_at_init_and_after_training(name):                           # checks 1, 2
    sae = make_sae(name)
    assert sae_deviation(sae) <= 1e-6
    losses = train_steps(sae, 30)
    assert losses[-1] < losses[0]
    assert float(sae.W_enc_free.detach().abs().max()) > 0          # U really moved
    assert sae_deviation(sae) <= 1e-6
    norms = sae.W_enc.detach().double().norm(dim=0) * sae.W_dec.detach().double().norm(dim=1)
    assert bool((norms >= 1 - 1e-6).all())


@pytest.mark.parametrize("name", ALIGNED)
def test_unit_decoder_and_zero_free_is_tied(name):                             # check 3
    sae = make_sae(name, decoder_init_norm=1.0)
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T, atol=1e-6, rtol=0)


def test_decoder_gets_gradient_from_both_paths_and_free_has_no_radial_gradient():  # check 4
    sae = make_sae("aligned_topk")
    x = torch.randn(64, 16)
    sae.training_forward_pass(step_input(sae, x)).loss.backward()
    radial = (sae.W_enc_free.grad * torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)).sum(-1)
    assert float(radial.abs().max()) < 1e-6 * float(sae.W_enc_free.grad.abs().max()) + 1e-9
    full = sae.W_dec.grad.clone()
    sae.zero_grad()
    # decoder path only: encode with the encoder detached from W_dec
    twin = _base_twin(sae)
    twin.training_forward_pass(step_input(twin, x)).loss.backward()
    assert (full - twin.W_dec.grad).abs().max() > 1e-4         # the encoder path contributes


@pytest.mark.parametrize("name", ALIGNED)
def test_isolated_feature_preactivation(name):                                  # check 6
    sae = make_sae(name)
    train_steps(sae, 5)
    with torch.no_grad():
        for i, alpha in [(0, 0.7), (11, -2.0)]:
            x = sae.b_dec + alpha * sae.W_dec[i]
            pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
            assert abs(float(pre[i]) - (alpha + float(sae.b_enc[i]))) < 1e-5


@pytest.mark.parametrize("name", ALIGNED)
def test_method_off_equals_the_host_architecture(name):                         # check 8
    """Same weights in the SAELens base class give the same training step: only the encoder map differs."""
    sae = make_sae(name)
    train_steps(sae, 5)
    twin = _base_twin(sae)
    x = torch.randn(32, 16)
    ours = sae.training_forward_pass(step_input(sae, x, step=5))
    theirs = twin.training_forward_pass(step_input(twin, x, step=5))
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.feature_acts, theirs.feature_acts, rtol=1e-5, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(ALIGNED), seed=st.integers(0, 10_000), lr=st.sampled_from([1e-3, 3e-2, 0.3]),
       scale=st.floats(0.05, 20.0))
def test_constraint_survives_steps_folds_and_save_load(tmp_path_factory, name, seed, lr, scale):
    torch.manual_seed(seed)
    sae = make_sae(name)
    train_steps(sae, 4, lr=lr, seed=seed)
    assert sae_deviation(sae) <= 1e-6
    x = torch.randn(16, 16)
    with torch.no_grad():
        before = sae(x)
        sae.fold_W_dec_norm()
        assert sae_deviation(sae) <= 1e-6
        torch.testing.assert_close(sae(x), before, rtol=1e-4, atol=1e-4)
        sae.fold_activation_norm_scaling_factor(scale)
        assert sae_deviation(sae) <= 1e-6
    path = tmp_path_factory.mktemp("ckpt")
    sae.save_model(path)
    loaded = TrainingSAE.load_from_disk(path)
    assert sae_deviation(loaded) <= 1e-6
    torch.testing.assert_close(loaded.W_enc, sae.W_enc)


@pytest.mark.parametrize("name", ALIGNED)
def test_whitening_fold_keeps_the_constraint_and_the_function(name):
    sae = make_sae(name)
    train_steps(sae, 5)
    mean = torch.randn(16)
    whitening = torch.randn(16, 16) / 4 + torch.eye(16)
    unwhitening = torch.linalg.inv(whitening)
    x = torch.randn(8, 16)
    with torch.no_grad():
        expected = sae((x - mean) @ whitening) @ unwhitening + mean
        sae.fold_activation_whitening(mean, whitening, unwhitening)
        torch.testing.assert_close(sae(x), expected, rtol=1e-3, atol=1e-3)
    assert sae_deviation(sae) <= 1e-6


@pytest.mark.parametrize("name", ALIGNED)
def test_inference_export_is_the_plain_base_format(tmp_path, name):
    sae = make_sae(name)
    train_steps(sae, 10)
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    assert loaded.cfg.metadata.training_architecture == name
    assert "Aligned" not in type(loaded).__name__          # loads without the plugin's classes
    assert sae_deviation(loaded) <= 1e-6
    twin_path = tmp_path / "twin"
    _base_twin(sae).save_inference_model(twin_path)
    twin = SAE.load_from_disk(twin_path)
    x = torch.randn(32, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), twin(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded.encode(x), twin.encode(x), rtol=1e-5, atol=1e-5)


def test_training_logs_alignment_and_dead_fraction():
    sae = make_sae("aligned_topk")
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:16] = True
    out = sae.training_forward_pass(step_input(sae, torch.randn(8, 16), logging=True, dead=dead))
    assert float(out.metrics["alignment/max_abs_deviation"]) < 1e-5
    assert abs(float(out.metrics["alignment/mean_score"]) - 1) < 1e-6
    assert float(out.metrics["dead_fraction"]) == pytest.approx(0.25)
    histogram = sae.log_histograms()["weights/alignment_score"]
    assert histogram.shape == (64,) and abs(histogram - 1).max() < 1e-5
    quiet = sae.training_forward_pass(step_input(sae, torch.randn(8, 16), logging=False))
    assert "dead_fraction" not in quiet.metrics


def test_training_checkpoints_load_for_inference_by_name(tmp_path):
    sae = make_sae("aligned_topk")
    train_steps(sae, 5)
    sae.save_model(tmp_path / "topk")
    inference = SAE.load_from_disk(tmp_path / "topk")
    assert type(inference).__name__ == "AlignedTopKSAE" and sae_deviation(inference) <= 1e-6
    x = torch.randn(8, 16)
    with torch.no_grad():
        torch.testing.assert_close(inference.encode(x), sae.encode(x))
    batchtopk = make_sae("aligned_batchtopk")
    batchtopk.save_model(tmp_path / "batchtopk")
    with pytest.raises(ValueError, match="training checkpoint of 'aligned_batchtopk'.*TrainingSAE.load_from_disk"):
        SAE.load_from_disk(tmp_path / "batchtopk")
