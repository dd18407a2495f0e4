"""Spec checks 1-6 on the framework-free aligned encoder map (shared/papers/aligned_training.md)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from helpers import relative_deviation
from sae_aligned_plugin.core import aligned_encoder, alignment_scores, project_encoder_to_alignment
from sae_aligned_plugin.core.aligned import _AlignedEncoder

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def decoder_and_free(draw):
    n_features = draw(st.integers(1, 12))
    d = draw(st.integers(2, 12))
    decoder = draw(arrays(np.float32, (n_features, d), elements=finite))
    # rows far enough from zero that 1/||d||² is representable in fp32
    norms = np.linalg.norm(decoder, axis=1)
    decoder[norms < 1e-2] += 1.0
    scale = draw(st.sampled_from([1e-2, 1.0, 1e2]))
    free = draw(arrays(np.float32, (n_features, d), elements=finite))
    return torch.from_numpy(decoder * scale), torch.from_numpy(free)


@settings(max_examples=200, deadline=None)
@given(decoder_and_free())
def test_constraint_holds_for_arbitrary_parameters(params):
    decoder, free = params
    encoder = aligned_encoder(decoder, free)
    assert encoder.dtype == torch.float32
    assert relative_deviation(encoder, decoder) <= 1e-6                         # check 1
    norms = encoder.double().norm(dim=-1) * decoder.double().norm(dim=-1)
    assert bool((norms >= 1 - 1e-6).all())                                      # check 2 (Cauchy–Schwarz)


def test_zero_free_and_unit_decoder_is_tied():                                  # check 3
    decoder = torch.nn.functional.normalize(torch.randn(50, 20), dim=-1)
    encoder = aligned_encoder(decoder, torch.zeros_like(decoder))
    torch.testing.assert_close(encoder, decoder, atol=1e-6, rtol=0)
    general = torch.randn(50, 20) * 3
    torch.testing.assert_close(aligned_encoder(general, torch.zeros_like(general)),
                               general / general.pow(2).sum(-1, keepdim=True))


def test_gradient_of_free_rows_is_orthogonal_to_decoder():                      # check 4
    decoder = torch.randn(30, 10)
    free = torch.randn(30, 10, requires_grad=True)
    (aligned_encoder(decoder, free) * torch.randn(30, 10)).sum().backward()
    along = (free.grad * torch.nn.functional.normalize(decoder, dim=-1)).sum(-1)
    assert float(along.abs().max()) < 1e-5
    assert float(free.grad.abs().max()) > 1e-2        # the tangent part does get gradient


def test_autograd_matches_finite_differences():                                 # check 4
    # the hand-written backward, in float64 (the public function casts to fp32)
    decoder = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    free = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_AlignedEncoder.apply, (decoder, free))
    # and through the public fp32 function
    assert torch.autograd.gradcheck(lambda d, u: aligned_encoder(d, u).double(), (decoder, free), eps=1e-3,
                                    atol=2e-3, rtol=2e-3)


def test_decoder_receives_gradient_through_the_encoder():                       # check 4
    decoder = torch.randn(8, 6, requires_grad=True)
    free = torch.randn(8, 6)
    x = torch.randn(32, 6)
    aligned_encoder(decoder, free).matmul(x.T).relu().sum().backward()
    assert float(decoder.grad.abs().max()) > 1e-3     # only the encoder path exists in this loss


def test_alignment_score_is_rescaling_invariant():                              # check 5
    encoder, decoder = torch.randn(40, 12), torch.randn(40, 12)
    c = torch.rand(40, 1) * 10 + 0.1
    torch.testing.assert_close(alignment_scores(c * encoder, decoder / c), alignment_scores(encoder, decoder))
    torch.testing.assert_close(aligned_encoder(decoder / c, c * encoder), c * aligned_encoder(decoder, encoder),
                               rtol=1e-5, atol=1e-5)


def test_isolated_feature_reads_back_with_gain_one():                           # check 6
    decoder, free = torch.randn(20, 8), torch.randn(20, 8)
    b_enc, b_dec = torch.randn(20), torch.randn(8)
    encoder = aligned_encoder(decoder, free)
    for i, alpha in [(0, 0.5), (7, -3.0), (19, 12.0)]:
        x = b_dec + alpha * decoder[i]
        pre = encoder @ (x - b_dec) + b_enc
        assert abs(float(pre[i]) - (alpha + float(b_enc[i]))) < 1e-4


def test_projected_gradient_ablation_snaps_a_free_encoder():
    decoder, encoder = torch.randn(25, 9), torch.randn(25, 9) * 4
    assert relative_deviation(encoder, decoder) > 1e-2
    snapped = project_encoder_to_alignment(encoder, decoder)
    assert relative_deviation(snapped, decoder) <= 1e-6
    # only the component along d_i moves
    moved = snapped - encoder
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(moved, decoder).abs(), torch.ones(25), atol=1e-4,
                               rtol=0)
