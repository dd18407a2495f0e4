"""SAEBench's ``core`` eval, with an injected language model and token dataset or from the hub.

* **Injected model** (offline): SAEBench's own pieces in the order its ``multiple_evals`` uses them —
  ``load_and_format_sae`` → ``ActivationsStore.from_sae`` → ``run_evals`` → ``calculate_misc_metrics`` →
  ``replace_nans_with_negative_one`` → ``save_single_eval_result`` — with our model and dataset in place of its
  ``HookedTransformer.from_pretrained_no_processing`` call. Works with a tokenizer-less model and in-memory tokens.
* **No model** (network): ``core.multiple_evals`` itself. It logs failures and returns ``[]``; that is turned into
  :class:`~sae_aligned_plugin.saebench.evals.EvalFailedError` here, never a silent empty result.

Both write SAEBench's ``<output>/<name>_custom_sae_eval_results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

HUB_DATASET = "Skylion007/openwebtext"
"""SAEBench's default core dataset (used when no dataset is given)."""


class EvalFailedError(RuntimeError):
    """A SAEBench eval ran but produced no result; the message says where to look."""


@dataclass(frozen=True)
class CoreOptions:
    """Sizes of the core eval (SAEBench's ``multiple_evals`` arguments)."""

    n_eval_reconstruction_batches: int = 20
    n_eval_sparsity_variance_batches: int = 20
    batch_size_prompts: int = 8
    dtype: str = "float32"
    device: str = "cpu"
    force_rerun: bool = True


def _special_tokens(model: Any) -> set[int | None]:
    """Pad, EOS and BOS ids (what ``multiple_evals`` ignores), or none for a tokenizer-less model."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return set()
    return {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}


def _eval_config(sae: Any, dataset_label: str, exclude_special: bool, options: CoreOptions) -> Any:
    from sae_bench.evals.core.eval_config import CoreEvalConfig

    flags = ("kl", "ce_loss", "l2_norms", "sparsity_metrics", "variance_metrics", "featurewise_density_statistics",
             "featurewise_weight_based_metrics")  # both featurewise flags: SAEBench saves frac_alive = 0 otherwise
    return CoreEvalConfig(
        model_name=sae.cfg.metadata.model_name, batch_size_prompts=options.batch_size_prompts,
        n_eval_reconstruction_batches=options.n_eval_reconstruction_batches,
        n_eval_sparsity_variance_batches=options.n_eval_sparsity_variance_batches,
        exclude_special_tokens_from_reconstruction=exclude_special, dataset=dataset_label,
        context_size=sae.cfg.metadata.context_size, llm_dtype=options.dtype,
        **{f"compute_{flag}": True for flag in flags},
    )


def run_core_with_model(name: str, sae: Any, model: Any, dataset: Any, output_folder: str | Path,
                        options: CoreOptions = CoreOptions()) -> Path:
    """Core eval of one SAE on ``model`` (a ``HookedTransformer``) and ``dataset`` (a tokenised or text HF
    ``Dataset``, or a local dataset path); returns the JSON path. ``sae`` needs the core metadata fields."""
    import sae_bench.evals.core.main as core
    from sae_bench.sae_bench_utils import general_utils, get_eval_uuid, get_sae_bench_version, get_sae_lens_version
    from sae_lens import ActivationsStore

    sae_id, sae, _ = general_utils.load_and_format_sae(name, sae, options.device)
    sae = sae.to(device=options.device, dtype=general_utils.str_to_dtype(options.dtype))
    path = Path(general_utils.get_results_filepath(str(output_folder), name, sae_id))
    if path.exists() and not options.force_rerun:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore = _special_tokens(model)
    label = dataset if isinstance(dataset, str) else f"in-memory dataset ({len(dataset)} rows)"
    config = _eval_config(sae, label, bool(ignore), options)
    store = ActivationsStore.from_sae(model, sae, dataset, context_size=config.context_size,
                                      store_batch_size_prompts=options.batch_size_prompts, device=options.device)
    store.shuffle_input_dataset(seed=42)
    scalars, features = core.run_evals(sae, store, model, config, ignore_tokens=ignore)
    result = {"unique_id": f"{name}_{sae_id}", "sae_set": name, "sae_id": sae_id, "eval_cfg": config,
              "metrics": {**scalars, "misc_metrics": core.calculate_misc_metrics(features)},
              "feature_metrics": features}
    core.save_single_eval_result(core.replace_nans_with_negative_one(result), get_eval_uuid(),
                                 get_sae_lens_version(), get_sae_bench_version(), str(path), sae)
    return path


def run_core_from_hub(name: str, sae: Any, output_folder: str | Path, dataset: str | None = None,
                      options: CoreOptions = CoreOptions()) -> Path:
    """Core eval through SAEBench's ``multiple_evals`` (downloads the model named in the SAE metadata)."""
    import sae_bench.evals.core.main as core
    from sae_bench.sae_bench_utils import general_utils

    path = Path(general_utils.get_results_filepath(str(output_folder), name, "custom_sae"))
    if path.exists() and not options.force_rerun:
        return path
    results = core.multiple_evals(
        selected_saes=[(name, sae)], n_eval_reconstruction_batches=options.n_eval_reconstruction_batches,
        n_eval_sparsity_variance_batches=options.n_eval_sparsity_variance_batches,
        eval_batch_size_prompts=options.batch_size_prompts, compute_featurewise_density_statistics=True,
        compute_featurewise_weight_based_metrics=True, exclude_special_tokens_from_reconstruction=True,
        dataset=dataset or HUB_DATASET, context_size=sae.cfg.metadata.context_size, output_folder=str(output_folder),
        dtype=options.dtype, device=options.device, force_rerun=True,
    )
    if not results or not path.exists():
        raise EvalFailedError(
            f"SAEBench's core eval returned no result for {name!r} (it logs the error and returns []): see the "
            f"'Failed to ...' log line above (model {sae.cfg.metadata.model_name!r} download, dataset "
            f"{dataset or HUB_DATASET!r}, or the SAE)"
        )
    return path
