"""Loading SAELens SAE folders with clear errors for missing, corrupt, pickled or unknown checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

from sae_aligned_plugin.saelens.registry import UnknownArchitectureError

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"


class CheckpointError(ValueError):
    """A folder that is not a loadable SAELens SAE; the message says what is wrong with it."""


def read_sae_folder_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``cfg.json`` of a SAELens SAE folder, after checking the folder and its weights file."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory (expected a SAELens SAE folder with {CFG_FILENAME})")
    cfg_path = folder / CFG_FILENAME
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder}: no {CFG_FILENAME}; this is not a SAELens SAE folder")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({error})") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise CheckpointError(f"{cfg_path}: expected a JSON object with an 'architecture' key")
    weights = folder / WEIGHTS_FILENAME
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.glob("*.pt")) + sorted(p.name for p in folder.glob("*.pth"))
        hint = f" (found {pickles}: pickled checkpoints are not loaded, for safety)" if pickles else ""
        raise CheckpointError(f"{folder}: no {WEIGHTS_FILENAME}{hint}")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{weights}: not a valid safetensors file ({error}); it is corrupt, truncated, or another format "
            "such as a pickle, which is refused for safety"
        ) from None
    return config


def load_sae(path: str | Path, device: str = "cpu", *, training: bool = False, **kwargs: Any) -> Any:
    """``SAE.load_from_disk`` (or ``TrainingSAE.load_from_disk`` with ``training=True``) after the checks above."""
    from sae_lens import SAE, TrainingSAE

    config = read_sae_folder_config(path)
    registry = SAE_TRAINING_CLASS_REGISTRY if training else SAE_CLASS_REGISTRY
    if config["architecture"] not in registry:
        kind = "training" if training else "inference"
        raise UnknownArchitectureError(
            f"{path}: architecture {config['architecture']!r} has no registered {kind} class. Registered: "
            f"{', '.join(sorted(registry))}. (Import the package that defines it first, e.g. sae_aligned_plugin.)"
        )
    return (TrainingSAE if training else SAE).load_from_disk(path, device=device, **kwargs)
