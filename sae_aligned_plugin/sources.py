"""Open an SAE from wherever the user points: a SAELens folder, a dictionary_learning folder, or the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_aligned_plugin.saelens.loading import CFG_FILENAME, CheckpointError, load_sae
from sae_aligned_plugin.saelens.metasae import META_SAE_FOLDER


def is_dictionary_learning_folder(path: Path) -> bool:
    """A ``trainSAE`` output folder: ``ae.pt`` and ``config.json``."""
    return (path / "ae.pt").is_file() and (path / "config.json").is_file()


def open_sae(source: str | Path, sae_id: str | None = None, device: str = "cpu") -> tuple[str, Any]:
    """``(name, SAELens SAE)`` for ``source``.

    * a SAELens SAE folder (``cfg.json`` + ``sae_weights.safetensors``): the plugin's checked loader;
    * a dictionary_learning ``trainSAE`` folder (``ae.pt`` + ``config.json``): converted to SAELens
      (needs the ``dictionary-learning`` extra); ``sae_id="meta_sae"`` gives a MetaSAE run's meta SAE, named
      ``<folder>_meta_sae``;
    * otherwise, with ``sae_id``, a Hugging Face repo id (``user/repo``) or SAELens release:
      ``SAE.from_pretrained(source, sae_id)``.

    The name is the folder name, or ``<repo>__<sae_id>`` for the hub (safe as a file-name part).
    """
    path = Path(source)
    if path.is_dir():
        if not (path / CFG_FILENAME).is_file() and is_dictionary_learning_folder(path):
            from sae_aligned_plugin.saebench.dictionaries import load_dictionary_as_sae

            if sae_id not in (None, META_SAE_FOLDER):
                raise ValueError(f"{path} is a dictionary_learning folder: its only SAE id is {META_SAE_FOLDER!r} "
                                 f"(a MetaSAE run's meta SAE), got {sae_id!r}")
            meta = sae_id == META_SAE_FOLDER
            return (f"{path.name}_{META_SAE_FOLDER}" if meta else path.name,
                    load_dictionary_as_sae(path, device=device, meta=meta))
        if not (path / CFG_FILENAME).is_file():
            raise CheckpointError(f"{path}: no {CFG_FILENAME} (a SAELens SAE folder) and no ae.pt + config.json "
                                  "(a dictionary_learning trainSAE folder)")
        return path.resolve().name, load_sae(path, device=device)
    if path.exists():
        raise CheckpointError(f"{path}: a file; expected a SAE folder (with {CFG_FILENAME}) or a hub repo id")
    if sae_id is None:
        raise ValueError(f"{source!r} is not a local folder; for a Hugging Face repo or SAELens release also "
                         "give the SAE id (CLI: --sae-id)")
    from sae_lens import SAE

    return f"{source}__{sae_id}".replace("/", "_"), SAE.from_pretrained(str(source), sae_id, device=device)
