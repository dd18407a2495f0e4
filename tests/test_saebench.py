"""SAEBench on plugin SAEs, offline: its ``core`` and ``meta_structure`` evals really run, unchanged.

Every registered architecture is trained briefly on a tiny random ``HookedTransformer``'s activations, exported,
loaded, made SAEBench-ready and evaluated; SAEBench's own ``multiple_evals`` entry point and its
dictionary_learning loader table are exercised too. Bad input fails with messages that say what to fix.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from helpers import make_sae, sae_deviation, train_steps
from sae_aligned_plugin import cli, plugin_architectures
from sae_aligned_plugin.saebench import (
    KNOWN_EVALS,
    CoreOptions,
    EvalFailedError,
    EvalUnavailableError,
    MissingMetadataError,
    UnknownEvalError,
    check_evals,
    has_signed_codes,
    prepare_sae,
    run_evals,
)
from sae_aligned_plugin.saebench import evals as evals_module
from sae_aligned_plugin.saebench.core_eval import run_core_from_hub
from sae_aligned_plugin.saelens import CheckpointError, load_sae
from sae_aligned_plugin.sources import open_sae
from sae_aligned_plugin.training import offline_model_and_tokens, read_config

TINY_CONFIG = Path(__file__).parents[1] / "configs" / "offline_tiny_aligned_topk.yaml"
HOOK = "blocks.1.hook_resid_post"
METADATA = {"model_name": "tiny-random", "hook_name": HOOK, "context_size": 32, "prepend_bos": True}
CORE = CoreOptions(n_eval_reconstruction_batches=2, n_eval_sparsity_variance_batches=4, batch_size_prompts=8)
META = {"train_steps": 100, "train_batch_size": 64}


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    """The offline config's tiny model, its token dataset, and activations at the SAE hook ``[4096, 64]``."""
    config = read_config(TINY_CONFIG)
    model, tokens = offline_model_and_tokens(config["offline"], config["context_size"])
    _, cache = model.run_with_cache(torch.tensor(tokens["input_ids"][:128]), names_filter=HOOK)
    return {"model": model, "tokens": tokens, "acts": cache[HOOK].reshape(-1, 64)}


def export(architecture: str, acts: torch.Tensor, folder: Path, steps: int = 150) -> Path:
    """Train ``architecture`` (d_in 64, d_sae 256) on ``acts`` for a few steps and export it to ``folder``."""
    sae = make_sae(architecture, d_in=64, d_sae=256)
    train_steps(sae, steps, lr=3e-3, batch=128, data=acts)
    sae.save_inference_model(folder)
    return folder


@pytest.mark.parametrize("architecture", plugin_architectures())
def test_core_and_meta_structure_run_on_every_architecture(architecture, tiny, tmp_path):
    folder = export(architecture, tiny["acts"], tmp_path / architecture)
    sae = prepare_sae(load_sae(folder), **METADATA)
    norms = sae.W_dec.detach().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)       # SAEBench's unit-norm expectation
    if architecture.startswith("aligned_"):
        assert sae_deviation(sae) <= 1e-6                                 # ⟨e_i, d_i⟩ = 1 survives the fold

    results = run_evals([(architecture, sae)], ["core", "meta_structure"], tmp_path / "out", model=tiny["model"],
                        dataset=tiny["tokens"], core=CORE, meta_structure=META)

    assert [(r.eval_name, r.path) for r in results] == [
        (name, tmp_path / "out" / name / f"{architecture}_custom_sae_eval_results.json")
        for name in ("core", "meta_structure")]
    core, meta = (r.metrics for r in results)
    assert core["token_stats.total_tokens_eval_sparsity_variance"] == 4 * 8 * 32
    assert 0.0 < core["misc_metrics.frac_alive"] <= 1.0
    assert 0.2 < core["reconstruction_quality.explained_variance"] <= 1.0   # trained: 0.48–0.94 here
    k = getattr(sae.cfg, "k", None)
    if sae.cfg.architecture() in ("topk", "abstopk") or has_signed_codes(sae):
        assert core["sparsity.l0"] == pytest.approx(k, abs=1e-6)          # TopK-type: exactly k per token
    else:
        assert 0.0 < core["sparsity.l0"] < sae.cfg.d_sae
    if has_signed_codes(sae):                                             # documented SAEBench undercount
        assert results[0].notes and "signed codes" in results[0].notes[0]
    details = json.loads(results[0].path.read_text())["eval_result_details"]
    assert len(details) == 256
    if architecture.startswith("aligned_"):                              # cos(e_i, d_i) = 1/||e_i|| with unit d_i
        expected = 1.0 / sae.W_enc.detach().norm(dim=0)
        got = torch.tensor([row["encoder_decoder_cosine_sim"] for row in details])
        assert torch.allclose(got, expected, atol=1e-3)
    assert 0.0 < meta["meta_structure.decoder_fraction_variance_explained"] <= 1.0
    assert json.loads(results[1].path.read_text())["sae_cfg_dict"]["d_sae"] == 256


def test_saebench_multiple_evals_entry_point_runs_unchanged(tiny, tmp_path, monkeypatch):
    """SAEBench's own ``core.multiple_evals`` (what its run_all_evals scripts call), with only the model loader
    pointed at the local model (it needs a tokenizer and a text dataset folder)."""
    import random

    import sae_bench.evals.core.main as core
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, 1000)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(tmp_path / "tokenizer")
    model = tiny["model"]
    model.set_tokenizer(PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tokenizer")))
    rng = random.Random(0)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "train.jsonl").write_text("".join(
        json.dumps({"text": " ".join(f"w{rng.randrange(4, 1000)}" for _ in range(40))}) + "\n" for _ in range(200)))
    loaded: list[str] = []

    def local_model(cls, model_name, device=None, dtype=None, **kwargs):
        loaded.append(model_name)
        return model.to(device).to(dtype)

    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing", classmethod(local_model))
    sae = prepare_sae(load_sae(export("aligned_topk", tiny["acts"], tmp_path / "sae")), **METADATA)
    try:
        results = core.multiple_evals(
            selected_saes=[("aligned_topk", sae)], n_eval_reconstruction_batches=2, n_eval_sparsity_variance_batches=2,
            eval_batch_size_prompts=8, compute_featurewise_density_statistics=True,
            compute_featurewise_weight_based_metrics=True, exclude_special_tokens_from_reconstruction=True,
            dataset=str(tmp_path / "text"), context_size=32, output_folder=str(tmp_path / "out"), dtype="float32",
            device="cpu", force_rerun=True)
    finally:
        model.tokenizer = None
    assert loaded == ["tiny-random"] and len(results) == 1
    saved = json.loads((tmp_path / "out" / "aligned_topk_custom_sae_eval_results.json").read_text())
    assert saved["eval_result_metrics"]["sparsity"]["l0"] == pytest.approx(4.0)
    assert 0.0 < saved["eval_result_metrics"]["misc_metrics"]["frac_alive"] <= 1.0


def test_silent_empty_core_result_is_an_error(tiny, tmp_path, monkeypatch):
    """SAEBench's core runner logs a failed model load and returns []: we raise instead."""
    import sae_bench.sae_bench_utils.general_utils as general_utils
    from transformer_lens import HookedTransformer

    def no_retry(**_: Any):
        return lambda function: function

    def unreachable(cls, *args, **kwargs):
        raise OSError("model not found")

    monkeypatch.setattr(general_utils, "retry_with_exponential_backoff", no_retry)
    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing", classmethod(unreachable))
    sae = prepare_sae(make_sae("topk", d_in=64, d_sae=256), **METADATA)
    with pytest.raises(EvalFailedError, match="returned no result for 'plain'.*tiny-random"):
        run_core_from_hub("plain", sae, tmp_path, options=CORE)


def test_dictionary_learning_sae_through_saebench_loader_table(tiny, tmp_path, monkeypatch):
    """An aligned dictionary_learning SAE loads through SAEBench's ``load_dictionary_learning_sae`` (our trainer
    classes in its ``TRAINER_LOADERS``) from a hub cache, computes what the dictionary computes, and evaluates."""
    import huggingface_hub.constants
    import sae_bench.custom_saes.run_all_evals_dictionary_learning_saes as runner

    from sae_aligned_plugin.dictionary_learning import AlignedTopKTrainer, load_dictionary
    from sae_aligned_plugin.saebench import register_trainer_loaders

    acts = tiny["acts"]
    trainer = AlignedTopKTrainer(steps=150, activation_dim=64, dict_size=256, k=4, layer=1, lm_name="tiny-random",
                                 device="cpu", seed=0, warmup_steps=10)
    generator = torch.Generator().manual_seed(0)
    for step in range(150):
        trainer.update(step, acts[torch.randint(0, acts.shape[0], (128,), generator=generator)])
    snapshot = tmp_path / "hub" / "models--org--saes" / "snapshots" / ("a" * 40)
    folder = snapshot / "aligned_topk" / "trainer_0"
    folder.mkdir(parents=True)
    torch.save(trainer.ae.state_dict(), folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": trainer.config, "buffer": {"ctx_len": 32}}))
    (tmp_path / "hub" / "models--org--saes" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--saes" / "refs" / "main").write_text("a" * 40)
    listed = tmp_path / "downloaded_saes" / "org_saes" / "aligned_topk" / "trainer_0"  # what SAEBench's lister makes
    listed.mkdir(parents=True)
    shutil.copy(folder / "config.json", listed / "config.json")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    names = register_trainer_loaders()
    assert {"AlignedTopKTrainer", "AlignedBatchTopKTrainer", "AlignedStandardTrainer"} <= set(names)
    assert all(runner.TRAINER_LOADERS[name].__module__ == "sae_aligned_plugin.saebench.dictionaries" for name in names)
    sae = runner.load_dictionary_learning_sae(repo_id="org/saes", location="aligned_topk/trainer_0",
                                              model_name="tiny-random", device="cpu", dtype=torch.float32,
                                              download_location=str(tmp_path / "downloaded_saes"))

    dictionary, _ = load_dictionary(folder)
    with torch.no_grad():
        assert torch.allclose(sae.encode(acts), dictionary.encode(acts), atol=1e-5)
        assert torch.allclose(sae(acts), dictionary(acts), atol=1e-5)
    assert sae.cfg.metadata.model_name == "tiny-random" and sae.cfg.metadata.hook_name == HOOK
    assert sae.cfg.metadata.training_architecture == "dictionary_learning:AlignedTopKTrainer"
    assert sae_deviation(sae) <= 1e-6

    results = run_evals([("dl_aligned_topk", sae)], ["core", "meta_structure"], tmp_path / "out",
                        model=tiny["model"], dataset=tiny["tokens"], core=CORE, meta_structure=META)
    assert results[0].metrics["sparsity.l0"] == pytest.approx(4.0)
    assert results[0].metrics["reconstruction_quality.explained_variance"] > 0.2
    assert 0.0 < results[1].metrics["meta_structure.decoder_fraction_variance_explained"] <= 1.0


DICTIONARIES = {  # name: (module, class, constructor arguments after (64, 256))
    "AlignedAutoEncoder": ("sae_aligned_plugin.dictionary_learning", "AlignedAutoEncoder", ()),
    "AlignedAutoEncoderTopK": ("sae_aligned_plugin.dictionary_learning", "AlignedAutoEncoderTopK", (4,)),
    "AlignedBatchTopKSAE": ("sae_aligned_plugin.dictionary_learning", "AlignedBatchTopKSAE", (4,)),
    "MetaBatchTopKSAE": ("sae_aligned_plugin.dictionary_learning", "MetaBatchTopKSAE", (4, 16, 2)),
    "ISAEDictionary": ("sae_aligned_plugin.dictionary_learning", "ISAEDictionary", (4,)),
    "ISAEMEDictionary": ("sae_aligned_plugin.dictionary_learning", "ISAEMEDictionary", (4, 3, 8)),
    "AutoEncoderTopK": ("dictionary_learning.trainers.top_k", "AutoEncoderTopK", (4,)),
}


@pytest.mark.parametrize("name", sorted(DICTIONARIES))
def test_dictionary_conversion_computes_what_the_dictionary_computes(name):
    import importlib

    from sae_aligned_plugin.saebench import dictionary_to_sae

    module, cls, args = DICTIONARIES[name]
    dictionary = getattr(importlib.import_module(module), cls)(64, 256, *args)
    with torch.no_grad():
        for parameter in dictionary.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        if hasattr(dictionary, "threshold"):
            dictionary.threshold.fill_(0.02)
    config = {"trainer": {"trainer_class": f"{cls}Trainer", "dict_class": cls, "layer": 1, "lm_name": "tiny-random"}}
    sae = dictionary_to_sae(dictionary, config)
    x = 3.0 * torch.randn(200, 64)
    with torch.no_grad():
        codes = dictionary.encode(x)
        assert int((codes != 0).sum()) > 200
        assert torch.allclose(sae.encode(x), codes, atol=1e-5)
        assert torch.allclose(sae(x), dictionary(x), atol=1e-4)
    assert (sae.cfg.metadata.model_name, sae.cfg.metadata.hook_name, sae.cfg.metadata.context_size) == (
        "tiny-random", HOOK, 128)
    assert has_signed_codes(sae) == name.startswith("ISAE")


def test_cli_eval_writes_saebench_outputs_and_prints_a_summary(tiny, tmp_path, capsys):
    sae = prepare_sae(load_sae(export("aligned_topk", tiny["acts"], tmp_path / "export")), **METADATA)
    sae.save_model(tmp_path / "ready")                    # a SAELens folder whose cfg.json has the metadata
    assert cli.main(["eval", str(tmp_path / "ready"), "--offline-config", str(TINY_CONFIG), "--n-batches", "2",
                     "--meta-train-steps", "50", "--meta-batch-size", "32", "--output-folder",
                     str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    core_file = tmp_path / "results" / "core" / "ready_custom_sae_eval_results.json"
    meta_file = tmp_path / "results" / "meta_structure" / "ready_custom_sae_eval_results.json"
    saved = json.loads(core_file.read_text())["eval_result_metrics"]
    assert saved["sparsity"]["l0"] == pytest.approx(4.0)
    assert f"{saved['reconstruction_quality']['explained_variance']:.6g}" in out
    assert "trained as aligned_topk" in out and str(meta_file) in out and meta_file.is_file()


def test_signed_codes_are_flagged_and_undercounted_by_saebench(tiny, tmp_path):
    """SAELens's built-in AbsTopK (the iSAE base): SAEBench's frac_alive counts only positive codes."""
    sae = prepare_sae(make_sae("abstopk", d_in=64, d_sae=256), **METADATA)
    assert has_signed_codes(sae) and not has_signed_codes(make_sae("topk", d_in=64, d_sae=256))
    [result] = run_evals([("abstopk", sae)], ["core"], tmp_path, model=tiny["model"], dataset=tiny["tokens"],
                         core=CORE)
    with torch.no_grad():
        codes = sae.encode(tiny["acts"])
    assert bool((codes < 0).any())
    assert result.metrics["sparsity.l0"] == pytest.approx(4.0)             # != 0 counts: correct
    alive_any_sign = float((codes != 0).any(0).float().mean())
    assert result.metrics["misc_metrics.frac_alive"] < alive_any_sign      # > 0 only: undercounts
    assert "signed codes" in result.notes[0]


# ------------------------------------------------------------------------------------------------ bad input


def test_unknown_eval_name_lists_the_known_ones(tmp_path):
    with pytest.raises(UnknownEvalError) as error:
        check_evals(["core", "coer"])
    assert "'coer'" in str(error.value) and all(name in str(error.value) for name in KNOWN_EVALS)
    with pytest.raises(SystemExit, match="unknown SAEBench eval.*'coer'.*meta_structure"):
        cli.main(["eval", str(tmp_path), "--evals", "coer"])


@pytest.mark.parametrize("field", ["model_name", "hook_name", "context_size", "prepend_bos"])
def test_missing_metadata_names_the_field(field, tmp_path):
    sae = make_sae("aligned_topk", d_in=64, d_sae=256)
    with pytest.raises(MissingMetadataError, match=f"missing '{field}'.*--{field.replace('_', '-')}"):
        prepare_sae(sae, **{key: value for key, value in METADATA.items() if key != field})


def test_cli_eval_without_metadata_says_which_field(tmp_path):
    make_sae("aligned_topk", d_in=64, d_sae=256).save_inference_model(tmp_path / "bare")
    with pytest.raises(SystemExit, match="missing 'model_name'.*--model-name"):
        cli.main(["eval", str(tmp_path / "bare"), "--evals", "meta_structure"])


def test_evals_that_need_what_is_missing_fail_fast(monkeypatch):
    started = time.perf_counter()
    with pytest.raises(EvalUnavailableError, match="'sparse_probing': offline.*network"):
        check_evals(["meta_structure", "sparse_probing"])
    with pytest.raises(EvalUnavailableError, match="'core': offline.*--offline-config"):
        check_evals(["core"])
    assert check_evals(["core", "meta_structure"], local_model=True)[0].name == "core"
    monkeypatch.setattr(evals_module, "hub_reachable", lambda timeout=5.0: True)
    with pytest.raises(EvalUnavailableError, match="'autointerp': no OpenAI API key"):
        check_evals(["autointerp"], offline=False)
    with pytest.raises(EvalUnavailableError, match="'mdl': the package\(s\) loguru"):
        check_evals(["mdl"], offline=False)
    with pytest.raises(EvalUnavailableError, match="'unlearning': the gated WMDP corpus"):
        check_evals(["unlearning"], offline=False)
    monkeypatch.setattr(evals_module, "hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(EvalUnavailableError, match="'ravel': the Hugging Face hub .* is unreachable"):
        check_evals(["ravel"], offline=False)
    assert time.perf_counter() - started < 2.0


def test_network_eval_configs_take_the_sae_model_and_options():
    sae = prepare_sae(make_sae("aligned_topk", d_in=64, d_sae=256), **METADATA)
    scr = evals_module._config(KNOWN_EVALS["scr"], sae, {"llm_batch_size": 4, "not_a_field": 1})
    tpp = evals_module._config(KNOWN_EVALS["tpp"], sae, {})
    assert (type(scr).__name__, scr.model_name, scr.llm_batch_size, scr.perform_scr) == (
        "ScrAndTppEvalConfig", "tiny-random", 4, True)
    assert tpp.perform_scr is False
    meta = evals_module._config(KNOWN_EVALS["meta_structure"], sae, evals_module._meta_options(None, "cpu"))
    assert meta.autocast is False and meta.train_steps == 1500                # SAEBench's default steps


def test_folder_without_cfg_json_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an SAE")
    with pytest.raises(CheckpointError, match="no cfg.json"):
        open_sae(tmp_path)
    save_file({"W_dec": torch.zeros(2, 2)}, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(SystemExit, match="no cfg.json"):
        cli.main(["eval", str(tmp_path), "--evals", "meta_structure"])
    with pytest.raises(ValueError, match="not a local folder.*--sae-id"):
        open_sae("org/not-here")
