"""``sae-aligned pull``: download one published SAE folder (and its SAELens sub-folders) to a local folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from sae_aligned_plugin.hub.upload import check_repo_id
from sae_aligned_plugin.saelens.loading import CFG_FILENAME, read_sae_folder_config


def _published_ids(repo_id: str, snapshot: Path, revision: str | None, token: str | None) -> list[str]:
    """SAE ids in the repo (from the hub listing, or what the local snapshot holds when offline)."""
    try:
        from huggingface_hub import HfApi

        files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
    except Exception:  # offline or unreachable: fall back to the cached snapshot
        files = [str(path.relative_to(snapshot)) for path in snapshot.rglob(CFG_FILENAME)]
    return sorted(path[: -len(CFG_FILENAME) - 1] for path in files if path.endswith(f"/{CFG_FILENAME}"))


def pull(repo_id: str, sae_id: str, output_dir: str | Path, *, revision: str | None = None,
         token: str | None = None) -> Path:
    """Download ``<repo_id>/<sae_id>/`` into ``output_dir/<sae_id>`` and return that folder.

    Uses the Hugging Face cache (``snapshot_download``), so it also works offline for cached repos. The folder
    loads with ``sae_aligned_plugin.saelens.load_sae`` (or ``SAE.load_from_disk``).
    """
    from huggingface_hub import snapshot_download

    check_repo_id(repo_id)
    snapshot = Path(snapshot_download(repo_id, allow_patterns=[f"{sae_id}/*"], revision=revision, token=token))
    source = snapshot / sae_id
    if not (source / CFG_FILENAME).is_file():
        available = _published_ids(repo_id, snapshot, revision, token)
        raise FileNotFoundError(f"no SAE {sae_id!r} in {repo_id}; published SAE ids: {available or 'none found'}")
    destination = Path(output_dir) / sae_id
    shutil.copytree(source, destination, dirs_exist_ok=True)
    read_sae_folder_config(destination)
    return destination
