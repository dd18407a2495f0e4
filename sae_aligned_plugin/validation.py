"""Input and config checks shared by every adapter: bad input fails early with a message that says what to fix."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


class ConfigError(ValueError):
    """An impossible or inconsistent configuration."""


def check_activation_width(x: torch.Tensor, d_in: int) -> None:
    """Raise if the last dimension of ``x`` is not the SAE's input width ``d_in``."""
    if x.shape[-1] != d_in:
        raise ValueError(
            f"activation width mismatch: the SAE expects d_in={d_in}, got a tensor of shape {tuple(x.shape)} "
            f"(last dimension {x.shape[-1]}). Check hook_name / the layer the activations come from."
        )


def check_finite(x: torch.Tensor, what: str = "activations") -> None:
    """Raise if ``x`` contains NaN or inf (checked before any parameter is touched)."""
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"non-finite {what}: {n_nan} NaN and {n_inf} inf values in a batch of shape {tuple(x.shape)}; "
            "no optimiser step was taken. Check the model's dtype (fp16 overflow) or the data source."
        )


def check_activations(x: torch.Tensor, d_in: int) -> None:
    """Width and finiteness checks for a training batch."""
    check_activation_width(x, d_in)
    check_finite(x)


def validate_sparsity_config(cfg: Any) -> None:
    """Reject impossible SAE configs: ``k`` outside (0, d_sae], negative coefficients, non-positive sizes.

    Works on any dataclass config (SAELens) or object with the same attribute names (dictionary_learning).
    """
    d_sae = _first_attribute(cfg, "d_sae", "dict_size")
    d_in = _first_attribute(cfg, "d_in", "activation_dim")
    for name, value in (("d_sae", d_sae), ("d_in", d_in)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    k = getattr(cfg, "k", None)
    if k is not None and d_sae is not None and not 0 < k <= d_sae:
        raise ConfigError(f"k must satisfy 0 < k <= d_sae (={d_sae}), got k={k}")
    names = [f.name for f in dataclasses.fields(cfg)] if dataclasses.is_dataclass(cfg) else list(vars(cfg))
    for name in names:
        value = getattr(cfg, name)
        if ("coefficient" in name or name.endswith("_penalty") or name == "lr") and isinstance(value, (int, float)):
            if value < 0:
                raise ConfigError(f"{name} must be non-negative, got {value}")


def _first_attribute(obj: Any, *names: str) -> Any:
    """The value of the first of ``names`` that ``obj`` has (0 included), else None."""
    return next((getattr(obj, name) for name in names if hasattr(obj, name)), None)


def validate_isae_config(cfg: Any) -> None:
    """iSAE / iSAE-ME checks on top of :func:`validate_sparsity_config` (spec ``shared/papers/isae.md`` §2, §7).

    ``encoder_steps`` (T) ≥ 1; ``step_matrix_rank`` None (dense F) or in [1, d_sae]; ``aux_k`` None or in
    [1, d_sae]; ``arip_support_multiplier`` ≥ 1. Works on SAELens configs and on trainer keyword namespaces.
    """
    validate_sparsity_config(cfg)
    d_sae = _first_attribute(cfg, "d_sae", "dict_size")
    steps = getattr(cfg, "encoder_steps", 1)
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"encoder_steps (T, the number of encoder steps) must be an integer >= 1, got {steps!r}")
    for name in ("step_matrix_rank", "aux_k"):
        value = getattr(cfg, name, None)
        if value is not None and (not isinstance(value, int) or not 1 <= value <= d_sae):
            raise ConfigError(f"{name} must be None or an integer in [1, d_sae={d_sae}], got {value!r}")
    multiplier = getattr(cfg, "arip_support_multiplier", 1)
    if not isinstance(multiplier, int) or multiplier < 1:
        raise ConfigError(f"arip_support_multiplier must be an integer >= 1, got {multiplier!r}")
