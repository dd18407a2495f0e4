"""Aligned training in dictionary_learning 0.1.0: dictionaries, trainers, trainSAE and the safe loader.

Spec ``shared/papers/aligned_training.md`` §3–5, checks 1, 3, 4, 5, 7 and 8 (adapted). Sizes are small (d=32,
F=128) so the file runs in well under a minute and a half on two cores.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from dictionary_learning.dictionary import AutoEncoder
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE, BatchTopKTrainer
from dictionary_learning.trainers.p_anneal import PAnnealTrainer
from dictionary_learning.trainers.standard import StandardTrainer
from dictionary_learning.trainers.top_k import AutoEncoderTopK, TopKTrainer
from dictionary_learning.training import trainSAE

from helpers import relative_deviation
from sae_aligned_plugin.metrics import encoder_decoder_rows
from sae_aligned_plugin.core import aligned_encoder
from sae_aligned_plugin.dictionary_learning import (
    AlignedAutoEncoder,
    AlignedAutoEncoderTopK,
    AlignedBatchTopKSAE,
    AlignedBatchTopKTrainer,
    AlignedPAnnealTrainer,
    AlignedStandardTrainer,
    AlignedTopKTrainer,
    load_dictionary,
)
from sae_aligned_plugin.validation import ConfigError

D, F, K = 32, 128, 8
COMMON = {"activation_dim": D, "dict_size": F, "layer": 0, "lm_name": "synthetic", "device": "cpu", "warmup_steps": 10}


@dataclass(frozen=True)
class Case:
    """One aligned trainer, its library counterpart, and the keywords that fit a run of ``steps`` steps."""

    ours: type
    base: type
    base_dict: type
    extra: Callable[[int], dict[str, Any]]

    def kwargs(self, steps: int, seed: int = 0, **overrides: Any) -> dict[str, Any]:
        return {"steps": steps, "seed": seed, **COMMON, **self.extra(steps), **overrides}

    def make(self, steps: int, trainer: type | None = None, **overrides: Any) -> Any:
        return (trainer or self.ours)(**self.kwargs(steps, **overrides))


CASES = {
    "standard": Case(AlignedStandardTrainer, StandardTrainer, AutoEncoder,
                     lambda steps: {"l1_penalty": 0.05, "sparsity_warmup_steps": steps // 4}),
    "panneal": Case(AlignedPAnnealTrainer, PAnnealTrainer, AutoEncoder,
                    lambda steps: {"initial_sparsity_penalty": 0.05, "sparsity_warmup_steps": steps // 4,
                                   "anneal_start": steps // 2, "p_end": 0.5, "n_sparsity_updates": 5}),
    "topk": Case(AlignedTopKTrainer, TopKTrainer, AutoEncoderTopK, lambda steps: {"k": K}),
    "batchtopk": Case(AlignedBatchTopKTrainer, BatchTopKTrainer, BatchTopKSAE,
                      lambda steps: {"k": K, "threshold_start_step": steps // 2}),
}
ALIGNED_DICTS = {"AlignedAutoEncoder": (AlignedAutoEncoder, ()), "AlignedAutoEncoderTopK": (AlignedAutoEncoderTopK, (K,)),
                 "AlignedBatchTopKSAE": (AlignedBatchTopKSAE, (K,))}
cases = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
aligned_dicts = pytest.mark.parametrize("dict_cls, extra_args", list(ALIGNED_DICTS.values()), ids=list(ALIGNED_DICTS))


def synthetic_batches(batch: int = 256, seed: int = 1) -> Iterator[torch.Tensor]:
    """Endless batches of sparse non-negative combinations of 96 fixed random unit directions, plus an offset.

    ``seed`` picks the codes only; the directions are the same for every call.
    """
    directions = torch.nn.functional.normalize(torch.randn(96, D, generator=torch.Generator().manual_seed(0)), dim=1)
    g = torch.Generator().manual_seed(seed)
    while True:
        codes = (torch.rand(batch, 96, generator=g) < 4 / 96) * (0.5 + torch.rand(batch, 96, generator=g))
        yield codes @ directions + 0.3


def fvu(ae: Any, x: torch.Tensor) -> float:
    """Fraction of variance unexplained, as ``trainSAE``'s ``log_stats`` computes it."""
    with torch.no_grad():
        return float((x - ae(x)).var(dim=0).sum() / x.var(dim=0).sum())


def deviation(ae: Any) -> float:
    """Spec check 1: max_i |⟨e_i, d_i⟩ − 1| / (||e_i||·||d_i||)."""
    with torch.no_grad():
        return relative_deviation(*encoder_decoder_rows(ae))


def unit_norm_error(ae: Any) -> float:
    return float((ae.decoder.weight.detach().norm(dim=0) - 1).abs().max())


def randomise_free(ae: Any, scale: float = 0.3) -> None:
    with torch.no_grad():
        ae.encoder.weight_free.normal_(0.0, scale)


@pytest.fixture(scope="module", autouse=True)
def import_probe() -> Iterator[subprocess.Popen[str]]:
    """``import sae_aligned_plugin`` in a fresh interpreter, started first so its ~20 s overlap this module's tests."""
    code = "import sys, sae_aligned_plugin; print(sorted(m for m in sys.modules if m.startswith('dictionary_learning')))"
    probe = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield probe
    if probe.poll() is None:  # the probe test was deselected
        probe.kill()
        probe.communicate()


@pytest.fixture
def record_trainers(monkeypatch: pytest.MonkeyPatch) -> Callable[[type], list[Any]]:
    """Patch ``cls.update`` to remember the trainer instances ``trainSAE`` builds (it returns nothing)."""

    def record(cls: type) -> list[Any]:
        seen: list[Any] = []
        original = cls.update

        def update(self: Any, step: int, x: torch.Tensor) -> Any:
            if self not in seen:
                seen.append(self)
            return original(self, step, x)

        monkeypatch.setattr(cls, "update", update)
        return seen

    return record


def run_trainsae(config: dict[str, Any], steps: int, save_dir: Path, **options: Any) -> dict[str, Any]:
    """``trainSAE`` on synthetic data; returns the written config.json (a copy of ``config`` is consumed)."""
    trainSAE(data=synthetic_batches(), trainer_configs=[dict(config)], steps=steps, save_dir=str(save_dir),
             device="cpu", **options)
    return json.loads((save_dir / "trainer_0" / "config.json").read_text())


# --- dictionaries -------------------------------------------------------------------------------------------


@aligned_dicts
def test_init_is_tied_unit_and_aligned(dict_cls: type, extra_args: tuple[int, ...]) -> None:
    """Spec §4 init and checks 1, 3: U = 0, unit decoder columns, so E = Dᵀ and ⟨e_i, d_i⟩ = 1."""
    ae = dict_cls(D, F, *extra_args)
    assert ae.encoder.weight_free.shape == (F, D) and float(ae.encoder.weight_free.detach().abs().max()) == 0.0
    assert unit_norm_error(ae) <= 1e-6
    assert float((ae.encoder_weight() - ae.decoder.weight.T).detach().abs().max()) <= 1e-6
    assert deviation(ae) <= 1e-6


@aligned_dicts
def test_from_pretrained_round_trip(dict_cls: type, extra_args: tuple[int, ...], tmp_path: Path) -> None:
    ae = dict_cls(D, F, *extra_args)
    randomise_free(ae)
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    loaded = dict_cls.from_pretrained(tmp_path / "ae.pt", device="cpu")
    x = next(synthetic_batches(64))
    assert torch.equal(loaded(x), ae(x))
    assert deviation(loaded) <= 1e-6
    if extra_args:
        with pytest.raises(ValueError, match="k=3 was requested but the checkpoint stores k=8"):
            dict_cls.from_pretrained(tmp_path / "ae.pt", k=3)


def test_deepcopy_keeps_each_encoder_on_its_own_decoder() -> None:
    ae = AlignedAutoEncoderTopK(D, F, K)
    clone = copy.deepcopy(ae)
    with torch.no_grad():
        clone.decoder.weight.copy_(torch.nn.functional.normalize(torch.randn(D, F), dim=0))
    assert float((clone.encoder_weight() - clone.decoder.weight.T).detach().abs().max()) <= 1e-6
    assert float((ae.encoder_weight() - ae.decoder.weight.T).detach().abs().max()) <= 1e-6
    assert float((clone.encoder_weight() - ae.encoder_weight()).detach().abs().max()) > 0.1


def test_scale_biases_changes_biases_only() -> None:
    ae = AlignedAutoEncoderTopK(D, F, K)
    randomise_free(ae)
    with torch.no_grad():
        ae.encoder.bias.normal_()
        ae.b_dec.normal_()
        ae.threshold.fill_(0.25)
    before = {name: value.clone() for name, value in ae.state_dict().items()}
    ae.scale_biases(2.0)
    for name in ("encoder.bias", "b_dec", "threshold"):
        assert torch.allclose(ae.state_dict()[name], 2.0 * before[name])
    for name in ("encoder.weight_free", "decoder.weight"):
        assert torch.equal(ae.state_dict()[name], before[name])
    assert deviation(ae) <= 1e-6


def test_normalize_decoder_uses_rescaling_symmetry() -> None:
    """Spec check 5: (u_i, b_enc_i, d_i) → (c·u_i, c·b_enc_i, d_i/c) keeps the output; normalize_decoder relies on it."""
    ae = AlignedAutoEncoder(D, F)
    randomise_free(ae)
    x = next(synthetic_batches(64))
    reference = ae(x).detach()
    scale = torch.empty(F).uniform_(0.5, 2.0)
    with torch.no_grad():
        ae.decoder.weight *= scale
        ae.encoder.weight_free /= scale[:, None]
        ae.encoder.bias /= scale
    assert float((ae(x).detach() - reference).abs().max()) <= 1e-4
    assert unit_norm_error(ae) > 0.1
    ae.normalize_decoder()
    assert unit_norm_error(ae) <= 1e-6
    assert float((ae(x).detach() - reference).abs().max()) <= 1e-4
    assert deviation(ae) <= 1e-6


def test_decoder_gradient_includes_the_encoder_path() -> None:
    """Spec check 4 / §3.1: the decoder parameter the host utilities project receives the gradient through E too."""
    ae = AlignedAutoEncoder(D, F)
    randomise_free(ae)
    x = next(synthetic_batches(64))
    ((x - ae(x)) ** 2).sum().backward()
    decoder, free = ae.decoder.weight, ae.encoder.weight_free

    def decoder_grad(detach_in_encoder: bool) -> torch.Tensor:
        encoder = aligned_encoder((decoder.detach() if detach_in_encoder else decoder).T, free)
        f = torch.relu((x - ae.bias) @ encoder.T + ae.encoder.bias)
        (grad,) = torch.autograd.grad(((x - f @ decoder.T - ae.bias) ** 2).sum(), decoder)
        return grad

    total, reconstruction_only = decoder_grad(False), decoder_grad(True)
    assert torch.allclose(decoder.grad, total, rtol=1e-4, atol=1e-4)
    assert float((total - reconstruction_only).norm()) > 0.05 * float(total.norm())
    along_decoder = (free.grad * decoder.detach().T).sum(dim=1).abs()
    assert float(along_decoder.max()) <= 1e-5 * float(free.grad.norm(dim=1).max())


# --- trainers -----------------------------------------------------------------------------------------------


@cases
def test_updates_keep_constraint_and_unit_decoder(case: Case) -> None:
    """Checks 1 and 7 after every optimiser step (host decoder-norm logic acting on the raw decoder)."""
    trainer = case.make(steps=40)
    for step, x in zip(range(25), synthetic_batches(128)):
        trainer.update(step, x)
        assert deviation(trainer.ae) <= 1e-6, step
        assert unit_norm_error(trainer.ae) <= 1e-5, step
    assert float(trainer.ae.encoder.weight_free.detach().abs().max()) > 1e-3  # U was actually trained


@cases
def test_trainsae_end_to_end(case: Case, tmp_path: Path, record_trainers: Callable[[type], list[Any]]) -> None:
    steps = 200
    config = {"trainer": case.ours, **case.kwargs(steps)}
    initial = case.make(steps).ae  # same seed as the trainer trainSAE builds
    seen = record_trainers(case.ours)
    # normalize_activations: training sees x / norm_factor, and scale_biases(norm_factor) runs before saving
    written = run_trainsae(config, steps, tmp_path, normalize_activations=True)
    assert len(seen) == 1
    assert written["trainer"]["trainer_class"] == case.ours.__name__
    assert written["trainer"]["dict_class"] == case.ours.DICTIONARY.__name__

    loaded, loaded_config = load_dictionary(tmp_path / "trainer_0")
    assert type(loaded) is case.ours.DICTIONARY and loaded_config == written
    x = next(synthetic_batches(1024, seed=7))
    assert torch.equal(loaded(x), seen[0].ae(x))
    assert deviation(loaded) <= 1e-6
    assert unit_norm_error(loaded) <= 1e-5
    before, after = fvu(initial, x), fvu(loaded, x)
    assert after < 0.4 and after < 0.5 * before, (before, after)


@cases
def test_projected_gradient_ablation_snaps_the_library_dictionary(case: Case) -> None:
    """The §3.3 ablation: the library's free encoder, snapped onto the constraint after every step."""
    trainer = case.make(steps=40, alignment="projected")
    assert type(trainer.ae) is case.base_dict and trainer.config["alignment"] == "projected"
    assert deviation(trainer.ae) <= 1e-6
    for step, x in zip(range(10), synthetic_batches(128)):
        trainer.update(step, x)
        assert deviation(trainer.ae) <= 1e-6, step
    free = case.make(steps=40, trainer=case.base)
    for step, x in zip(range(10), synthetic_batches(128)):
        free.update(step, x)
    assert deviation(free.ae) > 1e-2            # without the snap the constraint is lost
    with pytest.raises(ConfigError, match="alignment must be one of"):
        case.make(steps=40, alignment="tied")


@cases
def test_method_off_is_the_library_trainer(case: Case) -> None:
    """Check 8: with the library's dictionary swapped back in, our trainer is bit-identical to the library's."""
    ours = case.make(steps=20, dict_class=case.base_dict)
    base = case.make(steps=20, trainer=case.base)
    for step, x in zip(range(6), synthetic_batches(128)):
        ours.update(step, x)
        base.update(step, x)
    ours_state, base_state = ours.ae.state_dict(), base.ae.state_dict()
    assert list(ours_state) == list(base_state)
    assert all(torch.equal(ours_state[name], base_state[name]) for name in base_state)
    ours_config, base_config = ours.config, base.config
    assert set(ours_config) - set(base_config) <= {"k_anneal_steps", "alignment"} and set(base_config) <= set(ours_config)
    assert {key for key in base_config if base_config[key] != ours_config[key]} == {"trainer_class", "wandb_name"}


@cases
def test_aligned_trainer_shares_init_and_loss_with_library(case: Case) -> None:
    """Check 8 (adapted): same seed → same decoder directions and biases; loss = base loss with W_enc := E(D, U)."""
    ours, base = case.make(steps=40), case.make(steps=40, trainer=case.base)
    base_decoder = base.ae.decoder.weight
    assert torch.allclose(ours.ae.decoder.weight, base_decoder / base_decoder.norm(dim=0), atol=1e-6)
    shared = {name: value for name, value in base.ae.state_dict().items() if name not in ("encoder.weight", "decoder.weight")}
    assert shared and all(torch.equal(ours.ae.state_dict()[name], value) for name, value in shared.items())

    randomise_free(ours.ae)
    with torch.no_grad():
        base.ae.encoder.weight.copy_(ours.ae.encoder_weight())
        base.ae.decoder.weight.copy_(ours.ae.decoder.weight)
    for trainer in (ours, base):
        trainer.dead_feature_threshold = 0  # TopK family: every feature counts as dead, so AuxK is in the loss
    x = next(synthetic_batches(256))
    step = 5  # inside the sparsity warm-up, before any threshold or p update
    with torch.no_grad():
        ours_loss, base_loss = ours.loss(x, step=step), base.loss(x, step=step)
    assert float(base_loss) > 0.01
    assert torch.allclose(ours_loss, base_loss, rtol=1e-5, atol=0.0), (float(ours_loss), float(base_loss))


def test_resampling_restarts_features_at_the_tied_init() -> None:
    trainer = CASES["standard"].make(steps=40, resample_steps=10)
    trainer.update(1, next(synthetic_batches(256)))  # creates the Adam state resample_neurons edits
    randomise_free(trainer.ae)
    before = trainer.ae.encoder.weight_free.detach().clone()
    deads = torch.zeros(F, dtype=torch.bool)
    deads[:5] = True
    trainer.resample_neurons(deads.clone(), next(synthetic_batches(256, seed=3)))
    free = trainer.ae.encoder.weight_free.detach()
    assert float(free[:5].abs().max()) == 0.0 and torch.equal(free[5:], before[5:])
    assert float((trainer.ae.encoder_weight()[:5] - trainer.ae.decoder.weight.T[:5]).detach().abs().max()) <= 1e-6
    assert deviation(trainer.ae) <= 1e-6 and unit_norm_error(trainer.ae) <= 1e-5


def test_k_anneal_steps() -> None:
    """Upstream semantics: after step s, k = int(d·(1 − r) + k·r) with r = min(s, k_anneal_steps)/k_anneal_steps."""
    trainer = CASES["topk"].make(steps=20, k_anneal_steps=10)
    assert trainer.config["k_anneal_steps"] == 10
    ks = []
    for step, x in zip(range(12), synthetic_batches(64)):
        trainer.update(step, x)
        ks.append(int(trainer.ae.k))
    assert ks[0] == D and ks[5] == 20 and ks[10:] == [K, K]
    with pytest.raises(ConfigError, match="k_anneal_steps"):
        CASES["batchtopk"].make(steps=20, k_anneal_steps=20)


@cases
def test_bad_batches_raise_before_any_change(case: Case) -> None:
    trainer = case.make(steps=20)
    before = {name: value.clone() for name, value in trainer.ae.state_dict().items()}
    x = next(synthetic_batches(64))
    with pytest.raises(ValueError, match="activation width mismatch.*d_in=32"):
        trainer.update(0, torch.cat([x, x[:, :1]], dim=1))
    x[3, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite activations: 1 NaN"):
        trainer.update(0, x)
    assert all(torch.equal(trainer.ae.state_dict()[name], value) for name, value in before.items())
    assert not trainer.optimizer.state


@pytest.mark.parametrize(
    "case_name, overrides, match",
    [
        ("topk", {"k": F + 1}, "k must satisfy 0 < k <= d_sae"),
        ("batchtopk", {"k": F + 1}, "k must satisfy 0 < k <= d_sae"),
        ("standard", {"l1_penalty": -0.1}, "l1_penalty must be non-negative"),
        ("panneal", {"initial_sparsity_penalty": -1.0}, "initial_sparsity_penalty must be non-negative"),
    ],
)
def test_invalid_configs_fail_at_construction(case_name: str, overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CASES[case_name].make(steps=20, **overrides)


# --- loader -------------------------------------------------------------------------------------------------


def test_load_dictionary_reads_library_topk_output(tmp_path: Path, record_trainers: Callable[[type], list[Any]]) -> None:
    seen = record_trainers(TopKTrainer)
    run_trainsae({"trainer": TopKTrainer, **CASES["topk"].kwargs(30)}, 30, tmp_path)
    loaded, config = load_dictionary(tmp_path / "trainer_0")
    assert type(loaded) is AutoEncoderTopK and config["trainer"]["trainer_class"] == "TopKTrainer"
    x = next(synthetic_batches(256, seed=7))
    assert torch.equal(loaded(x), seen[0].ae(x))


class Harmless:
    """Stands in for an arbitrary pickled object: harmless, but not something weights_only may construct."""


@pytest.fixture
def saved_folder(tmp_path: Path) -> Path:
    """A minimal trainSAE-style folder holding an aligned TopK dictionary."""
    folder = tmp_path / "trainer_0"
    folder.mkdir()
    torch.save(AlignedAutoEncoderTopK(D, F, K).state_dict(), folder / "ae.pt")
    trainer = {"dict_class": "AlignedAutoEncoderTopK", "activation_dim": D, "dict_size": F, "k": K}
    (folder / "config.json").write_text(json.dumps({"trainer": trainer}))
    return folder


def _set_trainer(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["trainer"].update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _truncate(folder: Path) -> None:
    data = (folder / "ae.pt").read_bytes()
    (folder / "ae.pt").write_bytes(data[: len(data) // 2])


BROKEN_FOLDERS: dict[str, tuple[Callable[[Path], Any], type[Exception], str]] = {
    "no folder": (shutil.rmtree, FileNotFoundError, "is not a folder"),
    "no ae.pt": (lambda f: (f / "ae.pt").unlink(), FileNotFoundError, "lacks ae.pt"),
    "invalid json": (lambda f: (f / "config.json").write_text("{trainer: "), ValueError, "is not valid JSON"),
    "unknown dict_class": (lambda f: _set_trainer(f, dict_class="Mystery"), ValueError,
                           "(?s)unknown dict_class 'Mystery'.*known: .*AlignedAutoEncoder, AlignedAutoEncoderTopK, "
                           "AlignedBatchTopKSAE, .*AutoEncoder, AutoEncoderNew, AutoEncoderTopK, BatchTopKSAE"),
    "pickled object": (lambda f: torch.save({"decoder.weight": torch.zeros(2), "extra": Harmless()}, f / "ae.pt"),
                       ValueError, "(?s)not a plain state dict.*refused for safety"),
    "truncated": (_truncate, ValueError, "could not be read as a torch checkpoint \\(truncated or corrupt"),
    "shape mismatch": (lambda f: _set_trainer(f, dict_size=F // 2), ValueError,
                       "(?s)does not fit AlignedAutoEncoderTopK.*size mismatch for encoder.weight_free"),
    "missing key": (lambda f: torch.save({"decoder.weight": torch.zeros(D, F)}, f / "ae.pt"), ValueError,
                    "(?s)does not fit AlignedAutoEncoderTopK.*Missing key"),
}


@pytest.mark.parametrize("breakage", list(BROKEN_FOLDERS), ids=list(BROKEN_FOLDERS))
def test_load_dictionary_errors_are_clear(saved_folder: Path, breakage: str) -> None:
    load_dictionary(saved_folder)  # loads before the breakage
    corrupt, error, match = BROKEN_FOLDERS[breakage]
    corrupt(saved_folder)
    with pytest.raises(error, match=match):
        load_dictionary(saved_folder)


def test_from_pretrained_refuses_pickled_objects(saved_folder: Path) -> None:
    state = torch.load(saved_folder / "ae.pt", weights_only=True)
    torch.save({**state, "extra": Harmless()}, saved_folder / "ae.pt")
    with pytest.raises(ValueError, match="refused for safety"):
        AlignedAutoEncoderTopK.from_pretrained(saved_folder / "ae.pt")


def test_importing_the_plugin_does_not_import_dictionary_learning(import_probe: subprocess.Popen[str]) -> None:
    out, err = import_probe.communicate(timeout=300)
    assert import_probe.returncode == 0, err[-2000:]
    assert out.strip() == "[]"
