"""Which SAEBench evals exist, what each needs, and running a chosen list of them on SAEs.

Offline (``HF_HUB_OFFLINE=1``) two evals run here: ``core`` (given a local ``HookedTransformer`` and a token
dataset) and ``meta_structure`` (decoder weights only). Every other eval needs the network (models and datasets
from the hub), some also an API key, a gated dataset or a GPU. :func:`check_evals` refuses such a request up
front, naming what is missing, before anything runs. Each eval writes SAEBench's own JSON file under
``<output>/<eval>/``; an eval that produced none raises :class:`EvalFailedError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sae_aligned_plugin.saebench.adapter import BASE_METADATA, CORE_METADATA, has_signed_codes, prepare_sae
from sae_aligned_plugin.saebench.core_eval import (
    HUB_DATASET,
    CoreOptions,
    EvalFailedError,
    run_core_from_hub,
    run_core_with_model,
)

UNLEARNING_CORPUS = Path("sae_bench/evals/unlearning/data/bio-forget-corpus.jsonl")
"""Where SAEBench's unlearning eval reads the gated WMDP corpus (relative to the working directory)."""


@dataclass(frozen=True)
class EvalSpec:
    """One SAEBench eval: its module, config class, what it needs, and extra ``run_eval`` arguments."""

    name: str
    module: str
    config_class: str
    needs: str
    offline: bool = False
    config_kwargs: Mapping[str, Any] = field(default_factory=dict)


def _spec(name: str, module: str, config_class: str, needs: str, **config_kwargs: Any) -> EvalSpec:
    return EvalSpec(name, f"sae_bench.evals.{module}.main", config_class, needs, config_kwargs=config_kwargs)


NETWORK = "network access to the Hugging Face hub for the language model"
KNOWN_EVALS: dict[str, EvalSpec] = {spec.name: spec for spec in [
    EvalSpec("core", "sae_bench.evals.core.main", "CoreEvalConfig", offline=True,
             needs="a language model and token dataset: local ones (API model=/dataset=, CLI --offline-config) or "
                   f"{NETWORK} and the dataset {HUB_DATASET!r}"),
    EvalSpec("meta_structure", "sae_bench.evals.meta_structure.main", "MetaStructureEvalConfig", offline=True,
             needs="nothing beyond the SAE (trains a BatchTopK meta SAE on the decoder rows)"),
    _spec("absorption", "absorption", "AbsorptionEvalConfig",
          f"{NETWORK} (meaningful for 16k+ SAEs on 1B+ models; returns nothing on tiny models)"),
    _spec("autointerp", "autointerp", "AutoInterpEvalConfig",
          f"{NETWORK} and dataset, and an OpenAI API key (--api-key or OPENAI_API_KEY)"),
    _spec("mdl", "mdl", "MDLEvalConfig",
          f"{NETWORK} and the dataset HuggingFaceFW/fineweb, a CUDA GPU, and the packages loguru and collectibles"),
    _spec("ravel", "ravel", "RAVELEvalConfig", f"{NETWORK} and the RAVEL data"),
    _spec("scr", "scr_and_tpp", "ScrAndTppEvalConfig",
          f"{NETWORK} and the datasets bias_in_bios / amazon_reviews", perform_scr=True),
    _spec("tpp", "scr_and_tpp", "ScrAndTppEvalConfig",
          f"{NETWORK} and the datasets bias_in_bios / amazon_reviews", perform_scr=False),
    _spec("sparse_probing", "sparse_probing", "SparseProbingEvalConfig", f"{NETWORK} and the probing datasets"),
    _spec("sparse_probing_sae_probes", "sparse_probing_sae_probes", "SparseProbingSaeProbesEvalConfig",
          f"{NETWORK} (the probing data ships in the sae-probes package)"),
    _spec("unlearning", "unlearning", "UnlearningEvalConfig",
          f"{NETWORK} (an instruction-tuned model, e.g. gemma-2-2b-it) and the gated WMDP corpus at "
          f"./{UNLEARNING_CORPUS} (request access to WMDP)"),
]}
OFFLINE_EVALS = tuple(name for name, spec in KNOWN_EVALS.items() if spec.offline)


class UnknownEvalError(ValueError):
    """An eval name SAEBench does not have; the message lists the known ones."""


class EvalUnavailableError(RuntimeError):
    """A requested eval cannot run in this environment; the message says what it needs."""


@dataclass(frozen=True)
class EvalResult:
    """One eval of one SAE: SAEBench's JSON file and its scalar metrics (``group.metric`` → value)."""

    eval_name: str
    sae_name: str
    path: Path
    metrics: dict[str, float]
    notes: tuple[str, ...] = ()


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face endpoint answers within ``timeout`` seconds."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # any transport error means the evals would only fail later, after retries
        return False
    return True


def _needs_network(spec: EvalSpec, local_model: bool) -> bool:
    return not (spec.name == "meta_structure" or (spec.name == "core" and local_model))


def _missing(spec: EvalSpec, *, no_network: str | None, local_model: bool, api_key: str | None,
             device: str) -> str | None:
    """Why ``spec`` cannot run here, or None; ``no_network`` says why the hub cannot be used, if it cannot."""
    if not _needs_network(spec, local_model):
        return None
    if no_network:
        return f"{no_network}; it needs {spec.needs}"
    if spec.name == "autointerp" and not api_key:
        return "no OpenAI API key: pass --api-key or set OPENAI_API_KEY"
    if spec.name == "mdl":
        absent = [name for name in ("loguru", "collectibles") if importlib.util.find_spec(name) is None]
        if absent:
            return f"the package(s) {', '.join(absent)} are not installed"
        if not device.startswith("cuda"):
            return f"it needs a CUDA GPU (device is {device!r})"
    if spec.name == "unlearning" and not UNLEARNING_CORPUS.is_file():
        return f"the gated WMDP corpus is missing at ./{UNLEARNING_CORPUS}"
    return None


def check_evals(names: Sequence[str], *, local_model: bool = False, api_key: str | None = None,
                device: str = "cpu", offline: bool | None = None) -> list[EvalSpec]:
    """The specs of ``names``; raises before anything runs for unknown names or evals that cannot run here."""
    unknown = [name for name in names if name not in KNOWN_EVALS]
    if unknown:
        raise UnknownEvalError(f"unknown SAEBench eval(s) {unknown}; known: {', '.join(KNOWN_EVALS)} "
                               f"(offline-capable: {', '.join(OFFLINE_EVALS)})")
    if not names:
        raise UnknownEvalError(f"no eval requested; known: {', '.join(KNOWN_EVALS)}")
    offline = hub_offline() if offline is None else offline
    no_network = "offline (HF_HUB_OFFLINE is set)" if offline else None
    if not offline and any(_needs_network(KNOWN_EVALS[name], local_model) for name in names) and not hub_reachable():
        from huggingface_hub import constants

        no_network = f"the Hugging Face hub ({constants.ENDPOINT}) is unreachable"
    reasons = {name: _missing(KNOWN_EVALS[name], no_network=no_network, local_model=local_model, api_key=api_key,
                              device=device) for name in names}
    blocked = {name: reason for name, reason in reasons.items() if reason}
    if blocked:
        raise EvalUnavailableError("cannot run " + "; ".join(f"{name!r}: {why}" for name, why in blocked.items()))
    return [KNOWN_EVALS[name] for name in names]


def _config(spec: EvalSpec, sae: Any, options: Mapping[str, Any]) -> Any:
    """The eval's config object: ``model_name`` from the SAE, the spec's fixed values, then ``options``."""
    cls = getattr(importlib.import_module(spec.module), spec.config_class)
    fields = getattr(cls, "model_fields", None) or getattr(cls, "__dataclass_fields__", {})
    values = {"model_name": sae.cfg.metadata.model_name, **spec.config_kwargs, **options}
    return cls(**{key: value for key, value in values.items() if key in fields and value is not None})


def _run_saebench(spec: EvalSpec, name: str, sae: Any, folder: Path, *, device: str, api_key: str | None,
                  options: Mapping[str, Any], force_rerun: bool) -> Path:
    """``run_eval`` of the eval's SAEBench module on ``[(name, sae)]``; returns the JSON file it wrote."""
    module = importlib.import_module(spec.module)
    started = time.time()
    config = _config(spec, sae, options)
    arguments: list[Any] = [config, [(name, sae)], device]
    if spec.name == "autointerp":
        arguments.append(api_key)
    output = folder.parent if spec.name in ("scr", "tpp") else folder  # scr_and_tpp adds the eval's folder
    output.mkdir(parents=True, exist_ok=True)
    module.run_eval(*arguments, str(output), force_rerun)
    file_name = f"{name}_custom_sae_eval_results.json".replace("/", "_")  # SAEBench's name for SAE objects
    written = [path for path in output.rglob(file_name) if not force_rerun or path.stat().st_mtime >= started - 1]
    if not written:
        raise EvalFailedError(f"SAEBench's {spec.name} eval wrote no result for {name!r} under {output} "
                              "(it skips failures and small models silently): see its log above")
    return max(written, key=lambda path: path.stat().st_mtime)


def _meta_options(values: Mapping[str, Any] | None, device: str) -> dict[str, Any]:
    """``MetaStructureEvalConfig`` fields: autocast only on CUDA (SAEBench's default is on), then ``values``."""
    return {"autocast": device.startswith("cuda"), **(values or {})}


def summarize(path: str | Path) -> dict[str, float]:
    """Scalar metrics of a SAEBench result file, flattened to ``group.metric`` → value."""
    metrics = json.loads(Path(path).read_text()).get("eval_result_metrics", {})
    return {f"{group}.{key}": float(value) for group, values in metrics.items() for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def run_evals(
    saes: Sequence[tuple[str, Any]],
    evals: Sequence[str],
    output_folder: str | Path,
    *,
    model: Any = None,
    dataset: Any = None,
    core: CoreOptions = CoreOptions(),
    meta_structure: Mapping[str, Any] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    api_key: str | None = None,
) -> list[EvalResult]:
    """Run ``evals`` (SAEBench names) on each ``(name, sae)``; results under ``<output_folder>/<eval>/``.

    Each SAE goes through :func:`~sae_aligned_plugin.saebench.adapter.prepare_sae` first (metadata checked, decoder
    norms folded in place; a ``TrainingSAE`` is exported), so any SAELens SAE can be passed. ``model`` and
    ``dataset`` feed the core eval offline; without them it downloads the model named in the SAE metadata.
    ``meta_structure`` holds ``MetaStructureEvalConfig`` fields, ``options[eval]`` extra config fields for the
    other evals (e.g. ``llm_batch_size``). Raises before running anything if an eval cannot run here.
    """
    if (model is None) != (dataset is None):
        raise ValueError("pass both model= and dataset= (a local language model and its token dataset), or neither")
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    specs = check_evals(evals, local_model=model is not None, api_key=api_key, device=core.device)
    required = CORE_METADATA if "core" in evals else BASE_METADATA
    saes = [(name, prepare_sae(sae, required=required)) for name, sae in saes]
    results = []
    for spec in specs:
        folder = Path(output_folder) / spec.name
        for name, sae in saes:
            if spec.name == "core":
                path = (run_core_with_model(name, sae, model, dataset, folder, core) if model is not None
                        else run_core_from_hub(name, sae, folder, options=core))
            else:
                extra = (_meta_options(meta_structure, core.device) if spec.name == "meta_structure"
                         else (options or {}).get(spec.name, {}))
                path = _run_saebench(spec, name, sae, folder, device=core.device, api_key=api_key, options=extra,
                                     force_rerun=core.force_rerun)
            notes = ()
            if spec.name == "core" and has_signed_codes(sae):
                notes = ("signed codes: SAEBench counts only positive activations in feature_density/frac_alive, "
                         "so this SAE looks partly dead there; sparsity.l0 counts nonzeros and is correct",)
            results.append(EvalResult(spec.name, name, path, summarize(path), notes))
    return results
