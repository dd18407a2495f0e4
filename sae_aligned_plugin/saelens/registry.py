"""Registration of the plugin's architectures in SAELens's registry, and name lookups with helpful errors."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from sae_lens.registry import (
    SAE_CLASS_REGISTRY,
    SAE_TRAINING_CLASS_REGISTRY,
    register_sae_class,
    register_sae_training_class,
)


class UnknownArchitectureError(KeyError):
    """An architecture name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Family(NamedTuple):
    """The four SAELens classes of one plugin architecture, and the SAELens architecture it builds on."""

    config: type
    sae: type
    training_config: type
    training_sae: type
    base: str


def plugin_families() -> dict[str, Family]:
    """Every architecture this plugin provides, by registered name."""
    from sae_aligned_plugin.saelens.aligned import ALIGNED_FAMILIES
    from sae_aligned_plugin.saelens.isae import ISAE_FAMILIES
    from sae_aligned_plugin.saelens.metasae import METASAE_FAMILIES

    return {**ALIGNED_FAMILIES, **ISAE_FAMILIES, **METASAE_FAMILIES}


def register() -> None:
    """Register every plugin architecture (inference first: training configs look it up). Idempotent."""
    for name, family in plugin_families().items():
        if name not in SAE_CLASS_REGISTRY:
            register_sae_class(name, family.sae, family.config)
        if name not in SAE_TRAINING_CLASS_REGISTRY:
            register_sae_training_class(name, family.training_sae, family.training_config)


def plugin_architectures() -> list[str]:
    """Names of the architectures this plugin registers."""
    return sorted(plugin_families())


def known_training_architectures() -> list[str]:
    """Every name SAELens can train right now (built-ins and plugins)."""
    return sorted(SAE_TRAINING_CLASS_REGISTRY)


def get_training_class(architecture: str) -> tuple[type, type]:
    """``(training SAE class, training config class)`` for a name, or an error listing the known names."""
    try:
        return SAE_TRAINING_CLASS_REGISTRY[architecture]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown SAE architecture {architecture!r}. Registered architectures: "
            f"{', '.join(known_training_architectures())}. (Import sae_aligned_plugin before naming a plugin one.)"
        ) from None


def check_sae_config(config: dict[str, Any]) -> type:
    """The training config class for an ``sae`` config dict; clear errors for unknown names and keys (typos),
    which ``TrainingSAEConfig.from_dict`` would drop silently."""
    name = config.get("architecture")
    if name is None:
        raise ValueError("SAE config has no 'architecture' key")
    _, cfg_cls = get_training_class(name)
    valid = {f.name for f in dataclasses.fields(cfg_cls)} | {"architecture"}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(f"unknown keys in sae config for {name!r}: {unknown}; valid keys: {sorted(valid)}")
    return cfg_cls
