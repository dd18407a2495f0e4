"""Tests of sae_aligned_plugin.metrics: alignment scores, bimodality, dead latents, cross-seed stability, plots."""

from __future__ import annotations

import ast
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from sae_aligned_plugin.metrics import (
    BIMODALITY_THRESHOLD,
    alignment_report,
    bimodality_coefficient,
    cross_seed_stability,
    cross_seed_stability_from_rows,
    dead_fraction,
    encoder_decoder_rows,
    max_cosine,
    plot_alignment_histograms,
)

D_IN, D_SAE = 8, 12


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed))


def _saelens_sae(kind: str, w_enc: torch.Tensor, w_dec: torch.Tensor, **cfg_kwargs):
    """SAELens inference SAE of architecture ``kind`` with the given ``W_enc [d, F]``, ``W_dec [F, d]``, zero biases."""
    from sae_lens.registry import get_sae_class

    sae_cls, cfg_cls = get_sae_class(kind)
    sae = sae_cls(cfg_cls(d_in=w_enc.shape[0], d_sae=w_enc.shape[1], **cfg_kwargs))
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _dl_autoencoder(encoder_weight: torch.Tensor, decoder_weight: torch.Tensor):
    """dictionary_learning ``AutoEncoder`` with ``encoder.weight [F, d]`` and ``decoder.weight [d, F]`` as given."""
    from dictionary_learning.dictionary import AutoEncoder

    ae = AutoEncoder(encoder_weight.shape[1], encoder_weight.shape[0])
    with torch.no_grad():
        ae.encoder.weight.copy_(encoder_weight)
        ae.encoder.bias.zero_()
        ae.decoder.weight.copy_(decoder_weight)
    return ae


class _PluginStyleDictionary(nn.Module):
    """Has ``encoder_weight()`` and a Linear ``decoder``, plus decoy ``W_enc``/``W_dec`` that must be ignored."""

    def __init__(self, encoder_rows: torch.Tensor, decoder_rows: torch.Tensor):
        super().__init__()
        self._encoder_rows = encoder_rows
        self.decoder = nn.Linear(encoder_rows.shape[0], encoder_rows.shape[1], bias=False)
        with torch.no_grad():
            self.decoder.weight.copy_(decoder_rows.T)
        self.W_enc = nn.Parameter(torch.zeros(encoder_rows.shape[1], encoder_rows.shape[0]))
        self.W_dec = nn.Parameter(torch.zeros_like(encoder_rows))

    def encoder_weight(self) -> torch.Tensor:
        return self._encoder_rows


# ---------------------------------------------------------------- weights and alignment scores


def test_constructed_model_encoder_twice_decoder():
    decoder = _randn(D_SAE, D_IN) * torch.linspace(0.5, 2.0, D_SAE).unsqueeze(1)  # varied norms
    model = _PluginStyleDictionary(2.0 * decoder, decoder)

    enc_rows, dec_rows = encoder_decoder_rows(model)
    torch.testing.assert_close(dec_rows, decoder)  # decoder.weight [d, F] read transposed, decoys ignored
    torch.testing.assert_close(enc_rows, 2.0 * decoder)

    report = alignment_report(model)
    sq_norm = decoder.pow(2).sum(1).double().numpy()
    np.testing.assert_allclose(report.raw, 2.0 * sq_norm, rtol=1e-6)
    np.testing.assert_allclose(report.unit_decoder, 2.0 * np.sqrt(sq_norm), rtol=1e-6)
    np.testing.assert_allclose(report.cosine, 1.0, rtol=1e-6)
    assert report.bimodality_cosine == 0.0  # constant cosine: defined as 0, not NaN
    expected_dev = np.max(np.abs(2.0 * sq_norm - 1.0) / (2.0 * sq_norm))
    assert report.max_abs_deviation_from_one == pytest.approx(expected_dev, rel=1e-5)
    assert not report.raw.flags.writeable


@pytest.mark.parametrize("kind", ["standard", "topk"])
def test_saelens_sae_rows_and_scores(kind):
    w_enc, w_dec = _randn(D_IN, D_SAE, seed=1), _randn(D_SAE, D_IN, seed=2)
    w_enc = w_enc + 0.8 * w_dec.T  # mostly positive scores so the encode check below sees them
    sae = _saelens_sae(kind, w_enc, w_dec, **({"k": D_SAE} if kind == "topk" else {}))

    report = alignment_report(sae)
    expected = torch.einsum("if,fi->f", w_enc, w_dec).double().numpy()
    np.testing.assert_allclose(report.raw, expected, rtol=1e-5, atol=1e-6)
    # Semantics (spec §2): with zero biases, encoding x = d_i gives pre-activation a_i for feature i.
    with torch.no_grad():
        own_code = torch.diagonal(sae.encode(w_dec)).double().numpy()
    np.testing.assert_allclose(own_code, np.maximum(expected, 0.0), rtol=1e-5, atol=1e-6)
    assert (expected > 0).sum() >= D_SAE // 2


def test_dictionary_learning_transpose_handled_on_square_weights():
    # d == F: the wrong axis would give the same shapes but different numbers.
    d = f = 6
    encoder_weight, decoder_weight = _randn(f, d, seed=3), _randn(d, f, seed=4)
    ae = _dl_autoencoder(encoder_weight, decoder_weight)

    right = (encoder_weight * decoder_weight.T).sum(1)
    wrong = (encoder_weight * decoder_weight).sum(1)
    assert (right - wrong).abs().max() > 0.5
    report = alignment_report(ae)
    np.testing.assert_allclose(report.raw, right.double().numpy(), rtol=1e-5, atol=1e-6)
    # Semantics: the linear pre-activation of feature i at x = bias + d_i (d_i = column i of decoder.weight) is a_i.
    with torch.no_grad():
        pre = ae.encoder(decoder_weight.T)  # row i: encoder applied to d_i
    np.testing.assert_allclose(report.raw, torch.diagonal(pre).double().numpy(), rtol=1e-5, atol=1e-6)


def _dictionary_learning_models():
    from dictionary_learning.dictionary import AutoEncoder, AutoEncoderNew, GatedAutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    return {
        "AutoEncoder": lambda: AutoEncoder(D_IN, D_SAE),
        "AutoEncoderNew": lambda: AutoEncoderNew(D_IN, D_SAE),
        "GatedAutoEncoder": lambda: GatedAutoEncoder(D_IN, D_SAE),
        "JumpReluAutoEncoder": lambda: JumpReluAutoEncoder(D_IN, D_SAE, device="cpu"),
        "AutoEncoderTopK": lambda: AutoEncoderTopK(D_IN, D_SAE, k=3),
        "BatchTopKSAE": lambda: BatchTopKSAE(D_IN, D_SAE, k=3),
        "MatryoshkaBatchTopKSAE": lambda: MatryoshkaBatchTopKSAE(D_IN, D_SAE, k=3, group_sizes=[4, 8]),
    }


@pytest.mark.parametrize("name", sorted(_dictionary_learning_models()))
def test_dictionary_learning_decoder_rows_match_decode(name):
    model = _dictionary_learning_models()[name]()
    torch.manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():  # random, non-tied weights everywhere
            param.copy_(torch.randn_like(param))
        written = model.decode(torch.eye(D_SAE)) - model.decode(torch.zeros(1, D_SAE))
    enc_rows, dec_rows = encoder_decoder_rows(model)
    assert enc_rows.shape == dec_rows.shape == (D_SAE, D_IN)
    assert enc_rows.dtype == dec_rows.dtype == torch.float32 and not enc_rows.requires_grad
    torch.testing.assert_close(dec_rows, written, rtol=1e-5, atol=1e-5)  # row i is what feature i writes


def test_rescaling_invariance_of_raw_score():
    w_enc, w_dec = _randn(D_IN, D_SAE, seed=6), _randn(D_SAE, D_IN, seed=7)
    sae = _saelens_sae("standard", w_enc, w_dec)
    with torch.no_grad():
        sae.b_enc.copy_(_randn(D_SAE, seed=8))
    before = alignment_report(sae)
    x = _randn(5, D_IN, seed=9)
    with torch.no_grad():
        out_before = sae(x)
        c = torch.linspace(0.3, 3.0, D_SAE)
        sae.W_enc.mul_(c)
        sae.b_enc.mul_(c)
        sae.W_dec.div_(c.unsqueeze(1))
        out_after = sae(x)
    torch.testing.assert_close(out_after, out_before, rtol=1e-5, atol=1e-5)  # it is the model's symmetry
    after = alignment_report(sae)
    np.testing.assert_allclose(after.raw, before.raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.cosine, before.cosine, rtol=1e-5, atol=1e-6)
    # unit_decoder = a_i/||d_i|| follows the stored decoder scale (that is why it is reported separately).
    np.testing.assert_allclose(after.unit_decoder, before.unit_decoder * c.double().numpy(), rtol=1e-5, atol=1e-6)


def test_aligned_saelens_sae_is_at_one():
    import sae_aligned_plugin  # noqa: F401  (registers the architectures)
    from sae_lens.registry import get_sae_class

    sae_cls, cfg_cls = get_sae_class("aligned_topk")
    sae = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, k=2))
    with torch.no_grad():
        sae.W_enc_free.copy_(_randn(D_SAE, D_IN, seed=10))
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE).unsqueeze(1))
    report = alignment_report(sae)
    assert report.max_abs_deviation_from_one <= 1e-6
    np.testing.assert_allclose(report.raw, 1.0, atol=1e-5)
    assert report.bimodality_raw == 0.0  # rounding noise around 1 is not a distribution
    assert np.ptp(report.cosine) > 0.05  # but the cosines vary (free directions)
    summary = report.summary()
    json.dumps(summary, allow_nan=False)
    assert all(isinstance(v, float) for v in summary.values()) and summary["n_features"] == D_SAE


def test_unknown_model_type_error_names_attributes():
    with pytest.raises(TypeError) as err:
        encoder_decoder_rows(object())
    for name in ("encoder_weight()", "W_enc", "W_dec", "encoder.weight", "decoder.weight"):
        assert name in str(err.value)


# ---------------------------------------------------------------- bimodality coefficient


def test_bimodality_coefficient_values():
    rng = np.random.default_rng(0)
    two_modes = np.concatenate([rng.normal(-2.0, 0.3, 2000), rng.normal(2.0, 0.3, 2000)])
    gaussian = rng.normal(0.5, 1.0, 4000)
    assert bimodality_coefficient(two_modes) > 0.85
    assert 0.28 < bimodality_coefficient(gaussian) < 0.40  # theory: 1/3
    assert bimodality_coefficient(two_modes) > BIMODALITY_THRESHOLD > bimodality_coefficient(gaussian)
    # Same as Sarle's formula on scipy's bias-corrected skewness and excess kurtosis.
    x = rng.gamma(2.0, size=50)
    n, g, k = x.size, stats.skew(x, bias=False), stats.kurtosis(x, bias=False)
    reference = (g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert bimodality_coefficient(x) == pytest.approx(reference, rel=1e-10)


def test_bimodality_coefficient_degenerate_inputs():
    assert bimodality_coefficient(np.ones(100)) == 0.0
    assert bimodality_coefficient(1.0 + 1e-8 * np.random.default_rng(1).standard_normal(100)) == 0.0
    assert math.isnan(bimodality_coefficient([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        bimodality_coefficient([1.0, np.nan, 2.0, 3.0])


# ---------------------------------------------------------------- dead latents


def test_dead_fraction_exact_counts():
    # 5 latents: 0 fires 3x (positive), 1 fires only negative (2x), 2 and 4 never, 3 on every token.
    batch_1 = torch.tensor([[1.0, 0.0, 0.0, 2.0, 0.0], [0.5, -1.0, 0.0, 1.0, 0.0]])
    batch_2 = torch.tensor([[[0.0, 0.0, 0.0, 3.0, 0.0], [2.0, -0.1, 0.0, 1.0, 0.0]]])  # [1, 2, F]: leading dims flatten
    grad_modes: list[bool] = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        grad_modes.append(torch.is_grad_enabled())
        return x * 1.0

    report = dead_fraction(encode, [batch_1, batch_2], d_sae=5)
    assert grad_modes == [False, False]
    assert report.n_tokens == 4
    assert report.firing_counts.dtype == np.int64
    assert report.firing_counts.tolist() == [3, 2, 0, 4, 0]
    np.testing.assert_array_equal(report.firing_rate, [0.75, 0.5, 0.0, 1.0, 0.0])
    assert report.fraction_dead == 0.4 and report.n_dead == 2
    summary = report.summary()
    assert summary["mean_l0"] == 9 / 4 and summary["fraction_alive"] == pytest.approx(0.6)
    json.dumps(summary, allow_nan=False)

    with pytest.raises(ValueError, match="expected 6"):
        dead_fraction(encode, [batch_1], d_sae=6)
    with pytest.raises(ValueError, match="empty"):
        dead_fraction(encode, [])
    with pytest.raises(ValueError, match="non-finite"):
        dead_fraction(encode, [torch.full((2, 5), float("nan"))])


def test_dead_fraction_saelens_topk_counts_k_per_token():
    sae = _saelens_sae("topk", _randn(D_IN, D_SAE, seed=11), _randn(D_SAE, D_IN, seed=12), k=2)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # every pre-activation positive: exactly k nonzero codes per token
        sae.W_enc[:, 5] = 0.0
        sae.b_enc[5] = -1.0  # latent 5 can never fire
    batches = [_randn(16, D_IN, seed=s) for s in (13, 14, 15)]
    report = dead_fraction(sae.encode, batches, d_sae=D_SAE)
    assert report.n_tokens == 48
    assert int(report.firing_counts.sum()) == 2 * 48
    assert report.firing_counts[5] == 0
    assert report.fraction_dead == pytest.approx(np.mean(report.firing_counts == 0))


# ---------------------------------------------------------------- cross-seed stability


def test_stability_permuted_copy_across_libraries():
    encoder_weight, decoder_weight = _randn(D_SAE, D_IN, seed=16), _randn(D_IN, D_SAE, seed=17)
    ae = _dl_autoencoder(encoder_weight, decoder_weight)
    perm = torch.randperm(D_SAE, generator=_generator(18))
    # The same features in SAELens layout, in permuted order: SAELens feature j is dictionary feature perm[j].
    sae = _saelens_sae("standard", encoder_weight.T[:, perm], decoder_weight.T[perm])

    report = cross_seed_stability(ae, sae)
    for name in ("decoder_mmcs_ab", "decoder_mmcs_ba", "encoder_mmcs_ab", "encoder_mmcs_ba"):
        assert getattr(report, name) == pytest.approx(1.0, abs=1e-6)
    assert report.hungarian_mean_decoder_cos == pytest.approx(1.0, abs=1e-6)
    assert report.hungarian_mean_encoder_cos == pytest.approx(1.0, abs=1e-6)
    assert report.hungarian_shared_fraction == 1.0
    np.testing.assert_array_equal(perm.numpy()[report.hungarian_match_b], np.arange(D_SAE))
    assert report.decoder_max_cos_a.shape == (D_SAE,)
    summary = report.summary()
    json.dumps(summary, allow_nan=False)
    assert summary["n_features_a"] == summary["n_features_b"] == D_SAE


def test_stability_independent_models_is_low():
    d, f = 64, 32
    report = cross_seed_stability_from_rows(
        _randn(f, d, seed=19), _randn(f, d, seed=20), _randn(f, d, seed=21), _randn(f, d, seed=22)
    )
    for name in ("decoder_mmcs_ab", "decoder_mmcs_ba", "encoder_mmcs_ab", "encoder_mmcs_ba"):
        assert getattr(report, name) < 0.5
    assert report.hungarian_mean_decoder_cos < 0.35
    assert abs(report.hungarian_mean_encoder_cos) < 0.2
    assert report.hungarian_shared_fraction == 0.0


def test_sign_invariant_stability_matches_a_signed_permutation():
    """Signed codes: (−e, −d) is the same feature as (e, d). A signed permutation of a model is then identical to
    it under ``sign_invariant``, while the signed cosines see the flipped half as anti-parallel."""
    f, d = 24, 16
    enc, dec = _randn(f, d, seed=40), _randn(f, d, seed=41)
    perm = torch.randperm(f, generator=_generator(42))
    signs = torch.ones(f)
    signs[: f // 2] = -1.0
    enc_b, dec_b = (enc * signs[:, None])[perm], (dec * signs[:, None])[perm]

    report = cross_seed_stability_from_rows(enc, dec, enc_b, dec_b, sign_invariant=True)
    for name in ("decoder_mmcs_ab", "decoder_mmcs_ba", "encoder_mmcs_ab", "encoder_mmcs_ba",
                 "hungarian_mean_decoder_cos", "hungarian_mean_encoder_cos"):
        assert getattr(report, name) == pytest.approx(1.0, abs=1e-6), name
    assert report.hungarian_shared_fraction == 1.0
    np.testing.assert_array_equal(perm.numpy()[report.hungarian_match_b], np.arange(f))

    signed = cross_seed_stability_from_rows(enc, dec, enc_b, dec_b)
    assert signed.hungarian_shared_fraction <= 0.5 + 1e-9  # the flipped half cannot pass
    assert signed.decoder_mmcs_ab < 0.9

    # A feature whose decoder flips but whose encoder does not is not the same feature: its encoder cosine is −1.
    enc_c = enc_b.clone()
    flipped_in_b = int((perm == 0).nonzero())  # where feature 0 (sign −1) went
    enc_c[flipped_in_b] = -enc_c[flipped_in_b]
    mixed = cross_seed_stability_from_rows(enc, dec, enc_c, dec_b, sign_invariant=True)
    assert mixed.hungarian_shared_fraction == pytest.approx((f - 1) / f)
    assert mixed.hungarian_mean_encoder_cos == pytest.approx((f - 2) / f, abs=1e-6)


def _unit_orthogonal(v: torch.Tensor, seed: int) -> torch.Tensor:
    """A unit vector orthogonal to ``v``."""
    w = _randn(v.numel(), seed=seed)
    w = w - (w @ v) / (v @ v) * v
    return w / w.norm()


def test_shared_fraction_needs_encoder_and_decoder_above_threshold():
    f, d = 10, 32
    enc, dec = _randn(f, d, seed=27), _randn(f, d, seed=28)
    enc_b = enc.clone()
    enc_b[:4] = _randn(4, d, seed=29)  # 4 features keep their decoder but get an unrelated encoder
    enc_b[4] = enc[4] + 0.9 * enc[4].norm() * _unit_orthogonal(enc[4], seed=30)  # encoder cos ≈ 0.74
    report = cross_seed_stability_from_rows(enc, dec, enc_b, dec)
    assert report.hungarian_mean_decoder_cos == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(report.hungarian_match_b, np.arange(f))
    assert report.hungarian_shared_fraction == pytest.approx(0.6)
    strict = cross_seed_stability_from_rows(enc, dec, enc_b, dec, threshold=0.8)
    assert strict.hungarian_shared_fraction == pytest.approx(0.5) and strict.threshold == 0.8


def test_max_cosine_chunking_matches_dense_reference():
    a, b = _randn(23, 10, seed=23), _randn(17, 10, seed=24)
    a[4] = 0.0  # a zero row: cosine 0 with everything
    a_np, b_np = a.double().numpy(), b.double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        dense = (a_np / np.linalg.norm(a_np, axis=1, keepdims=True)) @ (b_np / np.linalg.norm(b_np, axis=1)[:, None]).T
    dense = np.nan_to_num(dense)
    for chunk_size in (1, 4, 23, 4096):
        best_a, best_b = max_cosine(a, b, chunk_size=chunk_size)
        np.testing.assert_allclose(best_a.numpy(), dense.max(axis=1), atol=1e-6)
        np.testing.assert_allclose(best_b.numpy(), dense.max(axis=0), atol=1e-6)
    reports = [cross_seed_stability_from_rows(a, a, b, b, chunk_size=s) for s in (1, 5, 4096)]
    for report in reports[1:]:
        assert report.summary() == pytest.approx(reports[0].summary(), abs=1e-6)
        np.testing.assert_array_equal(report.hungarian_match_b, reports[0].hungarian_match_b)
    with pytest.raises(ValueError):
        max_cosine(a, b, chunk_size=0)


def test_stability_different_widths():
    rows_a = _randn(20, 12, seed=25)
    keep = torch.randperm(20, generator=_generator(26))[:7]
    rows_b = rows_a[keep]  # B = 7 of A's 20 features, shuffled
    report = cross_seed_stability_from_rows(rows_a, rows_a, rows_b, rows_b, chunk_size=3)
    assert report.decoder_mmcs_ba == pytest.approx(1.0, abs=1e-6)
    assert report.decoder_mmcs_ab < 0.9
    assert report.decoder_max_cos_a.shape == (20,) and report.decoder_max_cos_b.shape == (7,)
    assert report.hungarian_shared_fraction == 1.0  # all 7 pairs are exact copies
    match = report.hungarian_match_b
    assert (match >= 0).sum() == 7
    np.testing.assert_array_equal(np.flatnonzero(match >= 0)[np.argsort(match[match >= 0])], keep.numpy())
    skipped = cross_seed_stability_from_rows(rows_a, rows_a, rows_b, rows_b, hungarian=False)
    assert math.isnan(skipped.hungarian_shared_fraction) and (skipped.hungarian_match_b == -1).all()
    assert skipped.decoder_mmcs_ab == pytest.approx(report.decoder_mmcs_ab, abs=1e-7)


# ---------------------------------------------------------------- plots


def test_plot_alignment_histograms_writes_png(tmp_path: Path):
    rng = np.random.default_rng(2)
    scores = {
        "baseline": np.concatenate([rng.normal(0.1, 0.05, 500), rng.normal(0.9, 0.1, 500)]),
        "aligned": np.ones(1000) + 1e-7 * rng.standard_normal(1000),
    }
    target = tmp_path / "figs" / "alignment.png"
    out = plot_alignment_histograms(scores, target, title="test", bins=40)
    assert out == target
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (840, 540)  # 7 × 4.5 in at 120 dpi
    assert len(data) > 10_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["alignment.png"]  # no temp file left behind

    plot_alignment_histograms({"only aligned": np.ones(50)}, target)  # overwrite; a lone spike works
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.read_bytes() != data
    with pytest.raises(ValueError):
        plot_alignment_histograms({}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


# ---------------------------------------------------------------- packaging


def test_metrics_package_imports_no_host_library():
    package = Path(__file__).resolve().parents[1] / "sae_aligned_plugin" / "metrics"
    sources = sorted(package.glob("*.py"))
    assert len(sources) >= 6
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in {"sae_lens", "dictionary_learning"} for n in names), source.name
