"""Train any registered architecture with SAELens's own runner from a YAML/dict config.

A config is exactly SAELens's ``LanguageModelSAERunnerConfig.to_dict()`` layout (``sae: {architecture: ...}``,
``logger: {...}``, model / dataset / token fields), plus one optional plugin block, ``offline``, that replaces
the hub model and dataset with a tiny random ``HookedTransformer`` and in-memory tokens (for tests and
machines without network)::

    offline:
      model: {n_layers: 2, d_model: 64, d_head: 16, n_heads: 4, d_mlp: 256, n_ctx: 32, d_vocab: 1000}
      tokens: {n_rows: 512, seed: 0}      # context_size comes from the runner config
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from sae_aligned_plugin.saelens.registry import check_sae_config


OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "WANDB_MODE": "disabled"}


def read_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Load a YAML file (or copy a dict) and check the architecture name and the SAE keys."""
    if isinstance(source, dict):
        config = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        config = yaml.safe_load(path.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a YAML mapping at the top level")
    sae = config.get("sae")
    if not isinstance(sae, dict) or "architecture" not in sae:
        raise ValueError("config needs an 'sae' mapping with an 'architecture' key")
    check_sae_config(sae)
    _check_runner_keys(config)
    config.setdefault("logger", {"log_to_wandb": False})
    return config


def _check_runner_keys(config: dict[str, Any]) -> None:
    """SAELens ignores misspelt top-level keys in some paths and fails obscurely in others: name them."""
    import dataclasses

    from sae_lens import LanguageModelSAERunnerConfig

    valid = {f.name for f in dataclasses.fields(LanguageModelSAERunnerConfig)} | {"offline"}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(f"unknown top-level config keys: {unknown}; see LanguageModelSAERunnerConfig for valid ones")


def runner_config(config: dict[str, Any]) -> Any:
    """``LanguageModelSAERunnerConfig`` from a checked config dict (the ``offline`` block is not part of it)."""
    from sae_lens import LanguageModelSAERunnerConfig

    return LanguageModelSAERunnerConfig.from_dict({k: v for k, v in config.items() if k != "offline"})


def offline_model_and_tokens(offline: dict[str, Any], context_size: int) -> tuple[Any, Any]:
    """A random-weight ``HookedTransformer`` and a pre-tokenised in-memory dataset, built from ``offline``."""
    import torch
    from datasets import Dataset
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model_kwargs = {"act_fn": "gelu", "normalization_type": "LN", "seed": 0, **offline.get("model", {})}
    model = HookedTransformer(HookedTransformerConfig(**model_kwargs))
    tokens_spec = offline.get("tokens", {})
    generator = torch.Generator().manual_seed(int(tokens_spec.get("seed", 0)))
    ids = torch.randint(0, model.cfg.d_vocab, (int(tokens_spec.get("n_rows", 512)), context_size), generator=generator)
    return model, Dataset.from_dict({"input_ids": ids.tolist()})


def train(source: str | Path | dict[str, Any], **overrides: Any) -> Any:
    """Train with ``LanguageModelSAETrainingRunner``; returns the trained SAE (export in ``output_path``)."""
    from sae_lens import LanguageModelSAETrainingRunner

    config = read_config(source)
    config.update(overrides)
    cfg = runner_config(config)
    model = dataset = None
    if "offline" in config:  # nothing may reach the network: wandb off unless the user set WANDB_MODE
        for name, value in OFFLINE_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        model, dataset = offline_model_and_tokens(config["offline"], cfg.context_size)
    return LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()
