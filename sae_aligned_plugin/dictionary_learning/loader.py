"""Safe loading of ``trainSAE`` output folders (``ae.pt`` + ``config.json``), ours and the library's built-ins.

The library's ``utils.load_dictionary`` is hard-coded on seven class names and unpickles with ``torch.load``
defaults; this loader dispatches on ``config["trainer"]["dict_class"]``, always reads with
``torch.load(weights_only=True)`` and turns every failure into an error that says what is wrong.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """``torch.load(path, weights_only=True)`` that accepts only a flat ``{name: Tensor}`` mapping.

    Raises ``ValueError`` for a checkpoint that pickles arbitrary Python objects (refused for safety), for a
    truncated or corrupt file, and for anything that is not a plain state dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "unrecognized function" in str(err):
            raise ValueError(
                f"{path} is not a plain state dict: it pickles arbitrary Python objects, which torch.load("
                "weights_only=True) refused for safety (loading it could run code). If you trust the file, load it "
                "yourself and re-save only `model.state_dict()`."
            ) from err
        raise ValueError(f"{path} could not be read as a torch checkpoint; the file is corrupt or not a checkpoint") from err
    except Exception as err:  # torch.load raises RuntimeError, EOFError, KeyError, ... on damaged files
        raise ValueError(
            f"{path} could not be read as a torch checkpoint (truncated or corrupt file?): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ValueError(f"{path} is not a plain state dict ({{name: Tensor}}); got {type(state).__name__}")
    return state


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, Tensor], what: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a ``ValueError`` naming the mismatch."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the checkpoint does not fit {what}: {err}") from err


def _dictionary_classes() -> dict[str, tuple[type[nn.Module], tuple[str, ...]]]:
    """``dict_class`` name -> (class, config keys passed after ``activation_dim, dict_size``)."""
    from dictionary_learning.dictionary import AutoEncoder, AutoEncoderNew, GatedAutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    from sae_aligned_plugin.dictionary_learning.dictionaries import (
        AlignedAutoEncoder,
        AlignedAutoEncoderTopK,
        AlignedBatchTopKSAE,
    )
    from sae_aligned_plugin.dictionary_learning.isae import ISAEDictionary, ISAEMEDictionary

    plain = (AutoEncoder, AutoEncoderNew, GatedAutoEncoder, JumpReluAutoEncoder, AlignedAutoEncoder)
    with_k = (AutoEncoderTopK, BatchTopKSAE, AlignedAutoEncoderTopK, AlignedBatchTopKSAE)
    classes: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {cls.__name__: (cls, ()) for cls in plain}
    classes.update({cls.__name__: (cls, ("k",)) for cls in with_k})
    classes[MatryoshkaBatchTopKSAE.__name__] = (MatryoshkaBatchTopKSAE, ("k", "group_sizes"))
    for cls in (ISAEDictionary, ISAEMEDictionary):
        classes[cls.__name__] = (cls, ("k", "encoder_steps", "step_matrix_rank", "signed"))
    from sae_aligned_plugin.dictionary_learning.metasae import AlignedMetaBatchTopKSAE, MetaBatchTopKSAE

    for cls in (MetaBatchTopKSAE, AlignedMetaBatchTopKSAE):
        classes[cls.__name__] = (cls, ("k", "meta_d_sae", "meta_k"))
    return classes


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or not isinstance(config.get("trainer"), dict):
        raise ValueError(f"{path} has no 'trainer' section; is it a trainSAE config.json?")
    return config


def load_dictionary(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a ``trainSAE`` output folder into ``(dictionary, config)``; ``config`` is the parsed ``config.json``.

    Covers the plugin's aligned dictionaries and the library's built-in classes. Shapes (``activation_dim``,
    ``dict_size``, ``k``, ``group_sizes``) come from the config; the state dict must then match exactly.
    Weights are loaded as saved (no decoder renormalisation).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; expected a trainSAE output folder with ae.pt and config.json")
    missing = [name for name in ("ae.pt", "config.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; a trainSAE output folder has ae.pt and config.json")
    config = _read_config(folder / "config.json")
    trainer = config["trainer"]
    name = trainer.get("dict_class")
    classes = _dictionary_classes()
    if name not in classes:
        raise ValueError(f"unknown dict_class {name!r} in {folder / 'config.json'}; known: {', '.join(sorted(classes))}")
    cls, extra = classes[name]
    needed = ("activation_dim", "dict_size", *extra)
    absent = [key for key in needed if key not in trainer]
    if absent:
        raise ValueError(f"{folder / 'config.json'}: the trainer section lacks {absent}, needed to build {name}")
    state_dict = read_state_dict(folder / "ae.pt")
    with torch.random.fork_rng(devices=[]):  # the constructors' random init must not move the caller's RNG
        dictionary = cls(*(trainer[key] for key in needed))
    load_state_dict_strict(dictionary, state_dict, f"{name}({', '.join(f'{k}={trainer[k]}' for k in needed)})")
    return dictionary.to(device), config
