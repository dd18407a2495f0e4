"""SAEBench adapters (optional extra ``sae-aligned-plugin[saebench]``): plugin SAEs into SAEBench unchanged.

SAEBench and dictionary_learning are imported only when an eval runs or a dictionary is converted.

* :func:`prepare_sae`: a SAELens SAE (ours or any) with the metadata SAEBench reads and unit-norm decoder rows.
* :func:`dictionary_to_sae` / :func:`load_dictionary_as_sae`: dictionary_learning dictionaries as SAELens SAEs;
  :func:`register_trainer_loaders` puts the plugin's trainers into SAEBench's ``TRAINER_LOADERS``.
* :func:`run_evals`: a chosen list of SAEBench evals, SAEBench's own JSON outputs, clear errors.
"""

from sae_aligned_plugin.saebench.adapter import (
    BASE_METADATA,
    CORE_METADATA,
    MissingMetadataError,
    has_signed_codes,
    prepare_sae,
    to_inference_sae,
    unit_norm_decoder,
)
from sae_aligned_plugin.saebench.core_eval import CoreOptions, EvalFailedError
from sae_aligned_plugin.saebench.dictionaries import (
    dictionary_to_sae,
    load_dictionary_as_sae,
    load_dictionary_learning_sae,
    register_trainer_loaders,
)
from sae_aligned_plugin.saebench.evals import (
    KNOWN_EVALS,
    OFFLINE_EVALS,
    EvalResult,
    EvalUnavailableError,
    UnknownEvalError,
    check_evals,
    run_evals,
    summarize,
)

__all__ = [
    "BASE_METADATA",
    "CORE_METADATA",
    "KNOWN_EVALS",
    "OFFLINE_EVALS",
    "CoreOptions",
    "EvalFailedError",
    "EvalResult",
    "EvalUnavailableError",
    "MissingMetadataError",
    "UnknownEvalError",
    "check_evals",
    "dictionary_to_sae",
    "has_signed_codes",
    "load_dictionary_as_sae",
    "load_dictionary_learning_sae",
    "prepare_sae",
    "register_trainer_loaders",
    "run_evals",
    "summarize",
    "to_inference_sae",
    "unit_norm_decoder",
]
