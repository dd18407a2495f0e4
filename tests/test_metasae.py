"""MetaSAE joint training (spec ``shared/papers/metasae.md``): core math, SAELens and dictionary_learning adapters,
co-firing |φ| and the seed comparison. Small sizes; the whole file runs in well under 90 s on two cores."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
from dictionary_learning.training import trainSAE
from sae_lens import SAE, JumpReLUSAE, TopKSAE, TrainingSAE, TrainingSAEConfig
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer

from helpers import make_sae, sae_config_dict, step_input, train_steps
from sae_aligned_plugin.core.metasae import (
    MetaCritic,
    MetaSAE,
    MetaSAEConfig,
    batch_topk,
    decomposability_penalty,
    default_meta_size,
    loss_scale,
    row_mean_std,
    standardise_rows,
    unit_rows,
)
from sae_aligned_plugin.core.sparse_codes import top_flat_indices
from sae_aligned_plugin.dictionary_learning import (
    AlignedMetaSAETrainer,
    MetaBatchTopKSAE,
    MetaSAETrainer,
    load_dictionary,
)
from sae_aligned_plugin.metrics import CofiringCounter, cofiring, compare_seeds
from sae_aligned_plugin.saelens.metasae import META_SAE_FOLDER, METASAE_FAMILIES
from sae_aligned_plugin.sources import open_sae
from sae_aligned_plugin.validation import ConfigError

NAMES = sorted(METASAE_FAMILIES)
BATCHTOPK_NAMES = ["metasae_batchtopk", "aligned_metasae_batchtopk"]


def _sparse_data(d_in: int = 16, n_dirs: int = 48, batch: int = 64, seed: int = 0) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_dirs, d_in, generator=g)
    while True:
        codes = torch.rand(batch, n_dirs, generator=g) * (torch.rand(batch, n_dirs, generator=g) < 0.1)
        yield codes @ directions


def _trainer(sae: TrainingSAE, steps: int, batch: int = 64, **overrides: Any) -> SAETrainer:
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=1e-2,
                           lr_end=1e-2, lr_scheduler_name="constant", lr_warm_up_steps=0, lr_decay_steps=0,
                           n_restart_cycles=1, dead_feature_window=1000, feature_sampling_window=1000,
                           n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False, device="cpu",
                           autocast=False, adam_beta1=0.9, adam_beta2=0.999, n_batches_for_norm_estimate=2,
                           logger=LoggingConfig(log_to_wandb=False), **overrides)
    return SAETrainer(cfg=cfg, sae=sae, data_provider=_sparse_data(sae.cfg.d_in, batch=batch))


def _meta_state(sae: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sae.meta_critic.state_dict().items()}


def _primary_state(sae: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sae.state_dict().items() if not k.startswith("meta_critic.")}


# ------------------------------------------------------------------------------------------------- core math


def test_penalty_value_range_and_sum_over_d():                                           # spec check 3
    rows = unit_rows(torch.randn(10, 7, dtype=torch.float64))
    target = rows + 0.3 * torch.randn(10, 7, dtype=torch.float64)
    p, e = decomposability_penalty(rows, target, sigma_sq=0.5)
    torch.testing.assert_close(e, ((rows - target) ** 2).sum(-1))       # summed over d, not averaged
    torch.testing.assert_close(p, torch.exp(-e / 0.5))
    assert bool(((p > 0) & (p <= 1)).all())
    p_exact, _ = decomposability_penalty(rows, rows.clone(), sigma_sq=0.5)
    assert torch.equal(p_exact, torch.ones(10, dtype=torch.float64))


def test_penalty_gradient_matches_formula_and_finite_differences():                        # spec check 1
    torch.manual_seed(1)
    rows = unit_rows(torch.randn(6, 5, dtype=torch.float64)).requires_grad_(True)
    target = torch.randn(6, 5, dtype=torch.float64) * 0.4
    sigma_sq = 0.7
    decomposability_penalty(rows, target, sigma_sq)[0].mean().backward()
    p = decomposability_penalty(rows.detach(), target, sigma_sq)[0]
    formula = -(2 * p / (6 * sigma_sq))[:, None] * (rows.detach() - target)
    torch.testing.assert_close(rows.grad, formula)
    assert bool(((rows.grad * (rows.detach() - target)).sum(-1) < 0).all())   # points away from Ŵ (for descent)
    check = torch.autograd.gradcheck(lambda r: decomposability_penalty(r, target, sigma_sq)[0].mean(),
                                     (rows.detach().clone().requires_grad_(True),))
    assert check


def test_loss_scale_converts_summed_raw_error_to_the_papers_per_element_error():
    x = torch.randn(50, 8) * 3 + 2
    standardised = standardise_rows(x)[0]
    error = 0.1 * torch.randn(50, 8).sign()                # an error in standardised units, same size per token
    raw_error = error * x.std(dim=-1, keepdim=True)        # the same error in the input's units
    paper = error.pow(2).mean()
    summed = raw_error.pow(2).sum(-1).mean()
    assert float(summed / paper) == pytest.approx(float(loss_scale(x)), rel=1e-5)
    assert float(loss_scale(standardised)) == pytest.approx(8.0, rel=1e-4)      # d for standardised tokens


def test_meta_batch_topk_keeps_k_per_row_on_average_and_rows_are_standardised():          # spec check 5
    pre = torch.randn(40, 9)
    codes = batch_topk(pre, k=2.0)
    dense = codes.dense(40, 9)
    assert int((dense != 0).sum()) <= 80 and codes.cols.numel() == 80
    kept = torch.relu(pre).flatten().topk(80).values
    torch.testing.assert_close(dense.flatten().sort().values[-80:], kept.sort().values)
    x, mean, std = standardise_rows(torch.randn(5, 11) * 3 + 1)
    torch.testing.assert_close(x.mean(-1), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(x.std(-1), torch.ones(5), atol=1e-4, rtol=0)


def test_fast_top_k_selection_is_exact_with_ties_and_few_positives():
    g = torch.Generator().manual_seed(1)
    for trial in range(120):
        n = int(torch.randint(1, 2500, (1,), generator=g))
        flat = torch.randn(n, generator=g) + 2 * float(torch.randn(1, generator=g))
        if trial % 2 == 0:
            flat = torch.relu(flat)                             # many exact zeros (half the trials keep negatives)
        if trial % 3 == 0:
            flat = (flat * 4).round() / 4                       # many ties
        count = int(torch.randint(1, n + 1, (1,), generator=g))
        got = top_flat_indices(flat, count, sample_size=int(torch.randint(8, 2000, (1,), generator=g)))
        assert bool((got[1:] > got[:-1]).all())                 # row-major order
        expected = torch.relu(flat).topk(count).values
        if got.numel() < count:                                 # only zero-valued entries may be left out
            expected = expected[expected > 0]
        assert torch.equal(flat[got].sort(descending=True).values, expected), trial


@pytest.mark.parametrize("n_dead", [7, 4])                    # AuxK picks the top 5 of 7 dead / takes all 4
def test_sparse_meta_gradients_equal_dense_autograd(n_dead):
    torch.manual_seed(0)
    sae = MetaSAE(12, 20, 3.0, aux_k=5).double()
    sae.b_dec.data.normal_()
    sae.steps_inactive[:n_dead] = 10                          # some dead latents: AuxK is on
    x = standardise_rows(torch.randn(50, 12, dtype=torch.float64))[0]
    out = sae.encode_standardised(x)
    params = [sae.W_enc, sae.W_dec, sae.b_dec]
    loss = sae.loss(out)[0]
    grads = torch.autograd.grad(loss, params)
    kept = out.codes.dense(50, 20) != 0                        # the same selection, through dense autograd
    pre = (x - sae.b_dec) @ sae.W_enc
    residual = x - (torch.relu(pre) * kept) @ sae.W_dec - sae.b_dec
    dead = torch.relu(pre[:, sae.dead_mask()])
    top = dead.topk(min(5, n_dead), dim=-1)
    aux_codes = torch.zeros_like(dead).scatter(-1, top.indices, top.values)
    reference = residual.pow(2).mean() + sae.aux_coefficient * (
        aux_codes @ sae.W_dec[sae.dead_mask()] - residual).pow(2).mean()
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=0)
    for ours, theirs in zip(grads, torch.autograd.grad(reference, params)):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_codes_gradient_pair_dots_equal_the_dense_product_on_both_paths():
    g = torch.Generator().manual_seed(3)
    pre = torch.randn(64, 30, generator=g, dtype=torch.float64)
    codes = batch_topk(pre, 4.0)
    left, right = torch.randn(64, 9, generator=g, dtype=torch.float64), torch.randn(30, 9, generator=g, dtype=torch.float64)
    expected = (left @ right.T)[codes.rows, codes.cols]
    torch.testing.assert_close(codes.pair_dots(left, right), expected, rtol=1e-12, atol=1e-12)   # sampled matmul
    dense_path = codes.pair_dots(left.bfloat16(), right.bfloat16())                          # the dense fallback
    assert dense_path.dtype == torch.bfloat16
    torch.testing.assert_close(dense_path.double(), expected, rtol=2e-2, atol=5e-2)


def test_row_moments_and_the_fused_meta_forward_equal_the_plain_computation():
    torch.manual_seed(4)
    decoder = torch.randn(200, 24, dtype=torch.float64) * torch.rand(200, 1, dtype=torch.float64) * 3
    inverse_norm = 1 / decoder.norm(dim=-1, keepdim=True)
    rows = decoder * inverse_norm
    mean, std = row_mean_std(decoder, inverse_norm)
    torch.testing.assert_close(mean, rows.mean(-1, keepdim=True), rtol=0, atol=1e-15)
    torch.testing.assert_close(std, rows.std(-1, keepdim=True), rtol=1e-12, atol=0)
    critic = MetaCritic(MetaSAEConfig(n_latents=200, d_in=24, meta_k=3)).double()
    critic.sae.b_dec.data.normal_()
    x, mean, std = standardise_rows(rows)
    expected = critic.sae.encode_standardised(x).recon * std + mean     # standardise, encode, decode, map back
    torch.testing.assert_close(critic.sae(decoder, inverse_norm), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(critic.sae(rows), expected, rtol=1e-10, atol=1e-12)


def test_fused_penalty_gradient_equals_autograd_through_the_formula():
    critic = MetaCritic(MetaSAEConfig(n_latents=300, d_in=20, lambda2=0.7, sigma_sq=0.5)).double()
    decoder = torch.randn(300, 20, dtype=torch.float64, requires_grad=True)
    terms = critic.penalty(decoder, 2.0)
    (fused,) = torch.autograd.grad(terms.loss, decoder)
    rows = unit_rows(decoder)
    x, mean, std = standardise_rows(rows.detach())
    target = critic.sae.encode_standardised(x).recon * std + mean
    p, _ = decomposability_penalty(rows, target.detach(), 0.5)
    (reference,) = torch.autograd.grad(0.7 * 2.0 * p.mean(), decoder)
    assert float(terms.mean_p) == pytest.approx(float(p.detach().mean()), rel=1e-10)
    torch.testing.assert_close(fused, reference, rtol=1e-8, atol=1e-14)


def test_meta_step_keeps_meta_decoder_near_unit_norm_and_lowers_its_loss():               # spec check 6
    config = MetaSAEConfig(n_latents=200, d_in=16, meta_k=3, meta_lr=1e-2)
    critic = MetaCritic(config)
    decoder = torch.randn(200, 16)
    losses = [float(critic.meta_train_step(decoder).loss) for _ in range(60)]
    assert losses[-1] < 0.8 * losses[0]
    norms = critic.sae.W_dec.detach().norm(dim=-1)
    assert float((norms - 1).abs().max()) < 0.05      # unit before each step, ~unit after it
    assert int(critic.meta_step) == 60 and int(critic.optimizer.step) == 60


def test_schedule_runs_n_meta_steps_after_every_n_primary_steps():
    critic = MetaCritic(MetaSAEConfig(n_latents=64, d_in=8, meta_k=2, n_primary_steps=3, n_meta_steps=2))
    ran = [critic.before_primary_step(torch.randn(64, 8)) for _ in range(10)]
    assert ran == [0, 0, 0, 2, 0, 0, 2, 0, 0, 2]        # primary first: P P P M M P P P M M ...
    assert int(critic.primary_step) == 10 and int(critic.meta_step) == 6


def test_meta_init_does_not_touch_the_global_rng():
    torch.manual_seed(3)
    MetaSAE(16, 8, 2.0, seed=5)
    after = torch.rand(3)
    torch.manual_seed(3)
    torch.testing.assert_close(after, torch.rand(3), rtol=0, atol=0)
    assert torch.equal(MetaSAE(16, 8, 2.0, seed=5).W_enc, MetaSAE(16, 8, 2.0, seed=5).W_enc)


# ---------------------------------------------------------------------------------------- SAELens: gradient flow


@pytest.mark.parametrize("name", NAMES)
def test_penalty_gradient_reaches_w_dec_only(name):                                       # spec check 2
    sae = make_sae(name, lambda2=0.5)
    sae.meta_critic.penalty(sae.W_dec).loss.backward()
    grads = {k: p.grad for k, p in sae.named_parameters()}
    assert float(grads["W_dec"].abs().max()) > 1e-6
    radial = (grads["W_dec"] * unit_rows(sae.W_dec.detach())).sum(-1)
    assert float(radial.abs().max()) < 1e-6 * float(grads["W_dec"].abs().max())     # tangential only
    others = {k: g for k, g in grads.items() if k != "W_dec" and g is not None and bool(g.abs().max() > 0)}
    assert others == {}, sorted(others)          # encoder, b_dec, W_enc_free and the whole meta SAE: nothing


@pytest.mark.parametrize("name", BATCHTOPK_NAMES)
def test_meta_step_changes_only_the_meta_sae(name):
    sae = make_sae(name)
    train_steps(sae, 2)
    primary, meta = _primary_state(sae), _meta_state(sae)
    sae.meta_critic.meta_train_step(sae.W_dec)
    assert all(torch.equal(v, _primary_state(sae)[k]) for k, v in primary.items())
    changed = {k for k, v in _meta_state(sae).items() if not torch.equal(v, meta[k])}
    assert {"sae.W_enc", "sae.W_dec", "sae.b_dec", "optimizer.step", "meta_step"} <= changed
    assert all(p.grad is None for p in sae.meta_critic.parameters())


def test_saelens_trainer_adam_never_moves_the_meta_sae():
    sae = make_sae("metasae_batchtopk", lambda2=1.0, n_primary_steps=1000)   # no meta phase in this run
    meta = _meta_state(sae)
    before = sae.W_dec.detach().clone()
    trainer = _trainer(sae, steps=12)
    trainer.fit()
    assert not torch.equal(before, sae.W_dec.detach())
    assert all(torch.equal(v, _meta_state(sae)[k]) for k, v in meta.items() if k != "primary_step")
    meta_params = {id(p) for p in sae.meta_critic.parameters()}
    assert not meta_params & {id(p) for p in trainer.optimizer.state}       # no Adam state for them either


@pytest.mark.parametrize("name, solo", [("metasae_batchtopk", "batchtopk"), ("metasae_topk", "topk"),
                                        ("aligned_metasae_batchtopk", "aligned_batchtopk")])
def test_lambda2_zero_trains_exactly_like_the_solo_sae(name, solo):                      # spec check 4
    runs = {}
    for arch, extra in ((name, {"lambda2": 0.0, "n_primary_steps": 3}), (solo, {})):
        torch.manual_seed(7)
        sae = TrainingSAE.from_dict(TrainingSAEConfig.from_dict(sae_config_dict(arch, **extra)).to_dict())
        _trainer(sae, steps=10).fit()
        runs[arch] = sae
    joint, single = runs[name], runs[solo]
    assert int(joint.meta_critic.meta_step) == 2 * 3       # the meta trained (before primary steps 3, 6, 9)
    for key, value in single.state_dict().items():
        assert torch.equal(joint.state_dict()[key], value), key


def test_schedule_in_the_saelens_trainer_and_logged_metrics():
    sae = make_sae("metasae_batchtopk", n_primary_steps=4, n_meta_steps=3)
    _trainer(sae, steps=13).fit()
    assert int(sae.meta_critic.primary_step) == 13 and int(sae.meta_critic.meta_step) == 3 * 3
    out = sae.training_forward_pass(step_input(sae, next(_sparse_data()), logging=True))
    metrics = {k: float(v) for k, v in out.metrics.items() if k.startswith("metasae/")}
    assert set(metrics) >= {"metasae/mean_p", "metasae/row_sq_error", "metasae/meta_mse", "metasae/meta_dead_fraction"}
    assert 0 < metrics["metasae/mean_p"] <= 1 and 0 <= metrics["metasae/meta_dead_fraction"] <= 1
    scale = float(loss_scale(out.sae_in))
    assert scale > 1 and float(out.losses["decomposability_penalty"].detach()) == pytest.approx(
        0.3 * scale * metrics["metasae/mean_p"], rel=1e-6)
    assert "weights/metasae_p" in sae.log_histograms()


def test_penalty_lowers_mean_p_against_the_same_trained_critic():
    """A trained, then frozen, critic (the same in every arm): the penalty must push the rows away from it. (A
    random critic is no test: its reconstruction has a large Jacobian, so stop-gradient steps need not lower p.)"""
    mean_p = {}
    for lambda2 in (0.0, 1.0):
        torch.manual_seed(0)
        sae = make_sae("metasae_batchtopk", lambda2=lambda2, n_meta_steps=0, meta_lr=1e-2)
        for _ in range(150):
            sae.meta_critic.meta_train_step(sae.W_dec)
        train_steps(sae, 60, lr=1e-2)
        mean_p[lambda2] = float(sae.meta_critic.penalty(sae.W_dec).mean_p)
    assert mean_p[1.0] < 0.85 * mean_p[0.0], mean_p


# ------------------------------------------------------------------------------------------- SAELens: export


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trips_meta_sae_optimizer_and_counters(tmp_path, name):
    sae = make_sae(name, n_primary_steps=2)
    train_steps(sae, 5)
    sae.save_model(tmp_path / "ckpt")
    again = TrainingSAE.load_from_disk(tmp_path / "ckpt")
    for key, value in sae.state_dict().items():
        if key == "topk_threshold":      # SAELens's own float64 buffer comes back as float32 (cfg dtype)
            continue
        loaded = again.state_dict()[key]
        assert loaded.dtype == value.dtype and torch.equal(loaded, value), key
    assert int(again.meta_critic.meta_step) == 4 and again.meta_critic.primary_step.dtype == torch.int64
    x = next(_sparse_data())
    for model in (sae, again):       # both take a meta phase (primary step 6) and a primary step identically
        model.training_forward_pass(step_input(model, x, step=5))
    torch.testing.assert_close(again.meta_critic.sae.W_dec, sae.meta_critic.sae.W_dec, rtol=0, atol=0)
    with pytest.raises(ValueError, match="training checkpoint"):
        SAE.load_from_disk(tmp_path / "ckpt")


def _assert_exported_meta_rebuilds_rows(meta: Any, critic: Any, decoder: torch.Tensor) -> None:
    """The exported ``jumprelu`` meta SAE maps the unit decoder rows as the critic does with its EMA threshold θ:
    standardise, ``relu`` above θ, decode, map back to the rows' scale."""
    rows = unit_rows(decoder)
    x, mean, std = standardise_rows(rows)
    pre = (x - critic.b_dec) @ critic.W_enc
    theta = float(critic.threshold)
    assert theta > 0
    expected = (pre * (pre > theta)) @ critic.W_dec + critic.b_dec
    with torch.no_grad():
        torch.testing.assert_close(meta(rows), expected * std + mean, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_export_is_the_plain_primary_plus_a_meta_sae_folder(tmp_path, name):
    sae = make_sae(name, n_primary_steps=2)
    train_steps(sae, 7)
    sae.save_inference_model(tmp_path / "export")
    primary = SAE.load_from_disk(tmp_path / "export")
    assert type(primary) is (TopKSAE if name == "metasae_topk" else JumpReLUSAE)
    assert not any("meta" in key for key in primary.state_dict())
    cfg = json.loads((tmp_path / "export" / "cfg.json").read_text())
    assert cfg["metadata"]["training_architecture"] == name
    torch.testing.assert_close(unit_rows(primary.W_dec), unit_rows(sae.W_dec.detach()))
    if name == "metasae_topk":       # same per-token TopK at inference: identical reconstructions
        x = next(_sparse_data())
        with torch.no_grad():
            torch.testing.assert_close(primary(x), sae.decode(sae.encode(x)), atol=1e-5, rtol=1e-5)

    meta = SAE.load_from_disk(tmp_path / "export" / META_SAE_FOLDER)
    critic = sae.meta_critic.sae
    assert type(meta) is JumpReLUSAE and meta.cfg.normalize_activations == "layer_norm"
    assert meta.cfg.d_sae == critic.d_sae == default_meta_size(64) and meta.cfg.metadata.meta_sae_of == name
    for key in ("W_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(meta, key), getattr(critic, key), rtol=0, atol=0)
    _assert_exported_meta_rebuilds_rows(meta, critic, sae.W_dec.detach())


def test_synthetic_runner_trains_by_name_and_writes_the_meta_folder(tmp_path):
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, SyntheticSAERunner, SyntheticSAERunnerConfig
    from sae_lens.synthetic import ZipfianFiringProbabilityConfig

    model_cfg = SyntheticModelConfig(num_features=96, hidden_dim=24, seed=0, std_firing_magnitudes=0.1,
                                     firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.05,
                                                                                        min_prob=0.01))
    cfg = SyntheticSAERunnerConfig.from_dict({
        "synthetic_model": model_cfg, "sae": sae_config_dict("metasae_batchtopk", d_in=24, d_sae=96),
        "training_samples": 256 * 150, "batch_size": 256, "lr": 3e-3, "eval_samples": 4096, "checkpoint_path": None,
        "output_path": str(tmp_path / "out"), "logger": {"log_to_wandb": False}})
    result = SyntheticSAERunner(cfg, override_synthetic_model=SyntheticModel(model_cfg)).run()
    assert result.final_eval.explained_variance > 0.5
    assert int(result.sae.meta_critic.meta_step) == 2 * (149 // 5)
    assert SAE.load_from_disk(tmp_path / "out" / META_SAE_FOLDER).cfg.d_sae == default_meta_size(96)


# ---------------------------------------------------------------------------------------- dictionary_learning


DL = {"activation_dim": 16, "dict_size": 96, "k": 4, "layer": 0, "lm_name": "synthetic", "device": "cpu",
      "warmup_steps": 2, "threshold_start_step": 5, "lr": 1e-2}


def _dl_updates(trainer: Any, steps: int) -> None:
    data = _sparse_data(batch=64, seed=4)
    for step in range(steps):
        trainer.update(step, next(data))


@pytest.mark.parametrize("cls", [MetaSAETrainer, AlignedMetaSAETrainer])
def test_dictionary_learning_lambda2_zero_equals_the_library_trainer(cls):
    from sae_aligned_plugin.dictionary_learning import AlignedBatchTopKTrainer

    solo_cls = BatchTopKTrainer if cls is MetaSAETrainer else AlignedBatchTopKTrainer
    joint = cls(steps=12, seed=0, lambda2=0.0, meta_k=2, n_primary_steps=4, n_meta_steps=1, **DL)
    solo = solo_cls(steps=12, seed=0, **DL)
    _dl_updates(joint, 12)
    _dl_updates(solo, 12)
    assert int(joint.meta_critic.meta_step) == 2
    for key, value in solo.ae.state_dict().items():
        assert torch.equal(joint.ae.state_dict()[key], value), key


def test_dictionary_learning_trains_saves_and_loads(tmp_path):
    configs = [{"trainer": cls, "steps": 20, "seed": 0, "meta_k": 2, "n_primary_steps": 5, **DL}
               for cls in (MetaSAETrainer, AlignedMetaSAETrainer)]
    data = _sparse_data(batch=64, seed=5)
    trainSAE(data=(next(data) for _ in range(20)), trainer_configs=copy.deepcopy(configs), steps=20,
             save_dir=str(tmp_path), device="cpu")
    for i, name in enumerate(("MetaBatchTopKSAE", "AlignedMetaBatchTopKSAE")):
        ae, config = load_dictionary(tmp_path / f"trainer_{i}")
        assert type(ae).__name__ == config["trainer"]["dict_class"] == name
        assert config["trainer"]["lambda2"] == 0.3 and config["trainer"]["meta_d_sae"] == default_meta_size(96)
        saved = torch.load(tmp_path / f"trainer_{i}" / "ae.pt", weights_only=True)
        assert int(saved["meta_sae.steps_inactive"].numel()) == default_meta_size(96)
        for key, value in saved.items():
            assert torch.equal(ae.state_dict()[key], value), key
    reloaded = MetaBatchTopKSAE.from_pretrained(tmp_path / "trainer_0" / "ae.pt", meta_k=2)
    assert torch.equal(reloaded.meta_sae.W_enc, load_dictionary(tmp_path / "trainer_0")[0].meta_sae.W_enc)


def test_dictionary_learning_meta_sae_opens_as_the_saelens_export_does(tmp_path):
    """``open_sae(<trainSAE folder>, "meta_sae")`` (what ``sae-aligned eval/diagnose --sae-id meta_sae`` use): the
    meta SAE as the SAELens export's ``jumprelu`` SAE, rebuilding the primary's unit decoder rows as the meta does."""
    config = {"trainer": MetaSAETrainer, "steps": 20, "seed": 0, "meta_k": 2, "n_primary_steps": 5, **DL}
    data = _sparse_data(batch=64, seed=6)
    trainSAE(data=(next(data) for _ in range(20)), trainer_configs=[config], steps=20, save_dir=str(tmp_path),
             device="cpu")
    folder = tmp_path / "trainer_0"
    dictionary, _ = load_dictionary(folder)
    critic = dictionary.meta_sae
    name, meta = open_sae(folder, META_SAE_FOLDER)
    assert name == "trainer_0_meta_sae" and type(meta) is JumpReLUSAE
    assert meta.cfg.normalize_activations == "layer_norm" and meta.cfg.d_sae == default_meta_size(96)
    assert meta.cfg.metadata.meta_sae_of == "dictionary_learning:MetaSAETrainer"
    assert meta.cfg.metadata.primary_d_sae == 96
    for key in ("W_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(meta, key), getattr(critic, key), rtol=0, atol=0)
    _assert_exported_meta_rebuilds_rows(meta, critic, dictionary.decoder.weight.T.detach())
    assert open_sae(folder)[1].cfg.d_sae == 96                        # without an id: the primary
    with pytest.raises(ValueError, match="only SAE id is 'meta_sae'"):
        open_sae(folder, "other")


def test_dictionary_learning_meta_params_only_move_in_meta_steps():
    trainer = MetaSAETrainer(steps=6, seed=0, meta_k=2, n_primary_steps=100, **DL)
    meta = {k: v.clone() for k, v in trainer.ae.meta_sae.state_dict().items()}
    _dl_updates(trainer, 6)
    assert all(torch.equal(v, trainer.ae.meta_sae.state_dict()[k]) for k, v in meta.items())
    assert all(p.grad is None for p in trainer.ae.meta_sae.parameters())


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("override, match", [
    ({"sigma_sq": 0.0}, "sigma_sq .* must be positive"),
    ({"sigma_sq": -1.0}, "sigma_sq .* must be positive"),
    ({"meta_d_sae": 64}, r"0 < meta_d_sae < d_sae \(=64\), got 64"),
    ({"meta_d_sae": 100}, r"0 < meta_d_sae < d_sae"),
    ({"meta_d_sae": 6, "meta_k": 7}, r"0 < meta_k <= meta_d_sae \(=6\), got 7"),
    ({"lambda2": -0.1}, "lambda2 must be >= 0"),
    ({"n_primary_steps": 0}, "n_primary_steps >= 1"),
])
def test_impossible_metasae_configs_are_rejected(override, match):
    for name in NAMES:
        with pytest.raises(ConfigError, match=match):
            TrainingSAEConfig.from_dict(sae_config_dict(name, **override))
    with pytest.raises(ConfigError, match=match):
        MetaSAETrainer(steps=10, **{**DL, "dict_size": 64, "meta_k": 2, **override})


def test_default_meta_k_larger_than_a_tiny_meta_is_named():
    with pytest.raises(ConfigError, match=r"meta_k <= meta_d_sae \(=6\), got 8"):
        TrainingSAEConfig.from_dict({"architecture": "metasae_batchtopk", "d_in": 16, "d_sae": 64, "k": 4})


def test_bad_batch_changes_neither_primary_nor_meta():
    sae = make_sae("metasae_batchtopk", n_primary_steps=1)
    train_steps(sae, 1)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    x = torch.randn(8, 16)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite activations"):
        sae.training_forward_pass(step_input(sae, x))
    assert all(torch.equal(v, sae.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------------------------------------- co-firing |φ|


def _phi_reference(fired: np.ndarray) -> np.ndarray:
    """Brute-force φ for every pair, straight from the definition (spec §3.1)."""
    n, f = fired.shape
    phi = np.zeros((f, f))
    for i in range(f):
        for j in range(f):
            a, b = fired[:, i].astype(float), fired[:, j].astype(float)
            n11, ni, nj = (a * b).sum(), a.sum(), b.sum()
            denominator = np.sqrt(ni * (n - ni) * nj * (n - nj))
            phi[i, j] = (n * n11 - ni * nj) / denominator if denominator > 0 else 0.0
    return phi


def test_mean_abs_phi_equals_the_direct_computation():                                   # spec check 7
    g = torch.Generator().manual_seed(0)
    values = torch.rand(900, 12, generator=g) - 0.6
    values[:, 4] = values[:, 3] + 0.05          # a correlated pair
    values[:, 7] = -1.0                         # never fires: φ = 0
    values[:, 9] = 1.0                          # always fires: φ = 0
    thresholds = torch.linspace(0.0, 0.3, 12)
    for theta in (None, thresholds):
        fired = (values > (0 if theta is None else theta)).numpy()
        phi = _phi_reference(fired)
        upper = np.triu_indices(12, 1)
        data = values.relu() if theta is None else values   # no thresholds: codes, firing when nonzero
        report = cofiring(lambda v: v, data.split(250), thresholds=theta, chunk_size=64)
        assert report.mean_abs_phi == pytest.approx(np.abs(phi[upper]).mean(), rel=1e-12)
        assert report.mean_phi == pytest.approx(phi[upper].mean(), rel=1e-9, abs=1e-15)
        np.testing.assert_allclose(report.latent_mean_abs_phi, (np.abs(phi).sum(1) - np.abs(np.diag(phi))) / 11)
        assert report.latent_mean_abs_phi[7] == 0 and report.latent_mean_abs_phi[9] == 0 and report.n_constant == 2
        live = np.setdiff1d(np.arange(12), [7, 9])                 # the pairs of the 10 non-constant latents
        live_upper = np.triu_indices(10, 1)
        assert report.mean_abs_phi_live == pytest.approx(np.abs(phi[np.ix_(live, live)][live_upper]).mean(), rel=1e-12)
        assert report.mean_abs_phi_live > report.mean_abs_phi
        np.testing.assert_array_equal(report.joint_counts, fired.T.astype(np.int64) @ fired.astype(np.int64))


def test_signed_codes_fire_when_nonzero():
    codes = torch.tensor([[1.0, -2.0, 0.0], [0.0, -1.0, 3.0], [2.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    report = cofiring(lambda v: v, [codes])
    np.testing.assert_array_equal(np.diag(report.joint_counts), [2, 2, 2])    # negative codes count as firing


def test_counts_are_exact_beyond_half_precision():
    counter = CofiringCounter(3, chunk_size=50_000)
    ones = torch.ones(70_001, 3)
    ones[::2, 2] = 0.0
    counter.update(ones)
    report = counter.report()
    assert report.joint_counts[0, 1] == 70_001 and report.joint_counts[0, 2] == 35_000   # fp16 would saturate
    assert report.firing_counts.dtype == np.int64


def test_seed_comparison_is_paired_on_matching_seeds_and_scaled_by_spread():
    base, cand = {0: 1.00, 1: 1.10, 2: 0.90}, {0: 0.95, 1: 1.04, 2: 0.86}
    paired = compare_seeds(base, cand)
    assert paired.paired and paired.difference == pytest.approx(-0.05)
    assert paired.spread == pytest.approx(np.sqrt((0.1**2 + np.var([0.95, 1.04, 0.86], ddof=1)) / 2))
    assert paired.effect == pytest.approx(paired.difference / paired.spread)
    assert paired.p_value < 0.05 and paired.relative_difference == pytest.approx(-0.05)
    unpaired = compare_seeds(list(base.values()), list(cand.values()))
    assert not unpaired.paired and unpaired.p_value > 0.4       # the seed spread swamps the same difference
    with pytest.raises(ValueError, match="at least 2"):
        compare_seeds([1.0], [2.0])
