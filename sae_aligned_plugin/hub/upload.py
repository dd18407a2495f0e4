"""``sae-aligned publish``: upload SAELens SAE folders to a Hugging Face repo in SAELens's layout.

Layout: ``<repo>/<sae_id>/{cfg.json, sae_weights.safetensors, sparsity.safetensors, runner_cfg.json}`` (the files
SAELens's own uploader keeps), ``<repo>/<sae_id>/<sub>/...`` for every sub-folder that is itself a SAELens SAE
folder (a MetaSAE's meta SAE: load it as ``sae_id/<sub>``), and a generated ``README.md`` model card with its rows
as data in ``sae_aligned_card.json``: a later upload to the same repo and branch merges its SAEs into them, so the
card lists every SAE published there. Unlike SAELens's uploader this supports a token, private repos and
non-``main`` branches.

The user's folders are only read: files are copied to a temporary staging folder, and the upload is one commit
(``HfApi.upload_folder``), so a failed or interrupted upload changes nothing locally or in the repo and the same
call can simply be repeated.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import HfApi

from sae_aligned_plugin.hub.card import CARD_DATA, CARD_DATA_VERSION, card_entries, merge_entries, render_card
from sae_aligned_plugin.saelens.loading import CFG_FILENAME, read_sae_folder_config

SAELENS_FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "runner_cfg.json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SAE_ID = re.compile(r"^[\w.-]+(/[\w.-]+)*$")


class PublishError(RuntimeError):
    """The upload failed; the local folders are unchanged and the call can be retried."""


@dataclass(frozen=True)
class PublishResult:
    """What was uploaded: the repo, branch, SAE ids (meta folders included) and every path in the repo."""

    repo_id: str
    revision: str
    sae_ids: tuple[str, ...]
    files: tuple[str, ...]
    commit_url: str | None


def check_repo_id(repo_id: str) -> None:
    """``namespace/name``, e.g. ``alice/my-saes``; anything else raises ``ValueError`` saying so."""
    if "/" not in repo_id:
        raise ValueError(f"repo id {repo_id!r} has no namespace: use 'your-username/{repo_id}' or "
                         f"'your-org/{repo_id}'")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"invalid repo id {repo_id!r}: expected 'namespace/name' with letters, digits, '-', '_', '.'")


def sae_folders(saes: Mapping[str, str | Path] | Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``(sae_id, folder)`` for each SAE and each SAELens sub-folder (``sae_id/<sub>``), all checked."""
    pairs = list(saes.items()) if isinstance(saes, Mapping) else [(Path(f).resolve().name, f) for f in saes]
    if not pairs:
        raise ValueError("nothing to publish: give at least one SAE folder")
    result: list[tuple[str, Path]] = []
    for sae_id, folder in pairs:
        if not _SAE_ID.match(sae_id) or {".", ".."} & set(sae_id.split("/")):
            raise ValueError(f"invalid sae_id {sae_id!r}: use letters, digits, '-', '_', '.' and '/' between parts")
        read_sae_folder_config(folder)
        result.append((sae_id, Path(folder)))
        for sub in sorted(Path(folder).iterdir()):
            if sub.is_dir() and (sub / CFG_FILENAME).is_file():
                read_sae_folder_config(sub)
                result.append((f"{sae_id}/{sub.name}", sub))
    ids = [sae_id for sae_id, _ in result]
    duplicates = sorted({sae_id for sae_id in ids if ids.count(sae_id) > 1})
    if duplicates:
        raise ValueError(f"duplicate sae_id(s) {duplicates}: name the SAEs, e.g. SAE_ID=FOLDER")
    return result


def stage(folders: Sequence[tuple[str, Path]], staging: Path) -> list[str]:
    """Copy the SAELens files of each folder to ``staging/<sae_id>/``; return their repo paths."""
    files = []
    for sae_id, folder in folders:
        for name in SAELENS_FILES:
            if (folder / name).is_file():
                (staging / sae_id).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, staging / sae_id / name)
                files.append(f"{sae_id}/{name}")
    return sorted(files)


def _published_rows(api: HfApi, repo_id: str, revision: str, token: str | None, files: list[str]) \
        -> list[dict[str, Any]]:
    """The card rows stored on ``revision``; none if the file is missing, unreadable or of another version (those
    SAEs are then listed as undescribed, and the new card data replaces the file)."""
    if CARD_DATA not in files:
        return []
    path = api.hf_hub_download(repo_id, CARD_DATA, revision=revision, token=token)
    try:
        data = json.loads(Path(path).read_text())
        rows = data["saes"] if data.get("version") == CARD_DATA_VERSION else []
        return [row for row in rows if isinstance(row, dict) and isinstance(row.get("sae_id"), str)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def stage_card(api: HfApi, repo_id: str, revision: str, token: str | None, entries: list[dict[str, Any]],
               staging: Path) -> list[str]:
    """Write ``README.md`` and :data:`CARD_DATA` to ``staging`` for ``entries`` merged into the rows already
    published at ``revision`` (a commit: rows of SAEs no longer in the repo are dropped); SAE folders there without
    rows are listed as undescribed. Returns the repo paths."""
    files = api.list_repo_files(repo_id, revision=revision, token=token)
    in_repo = {path.removesuffix(f"/{CFG_FILENAME}") for path in files if path.endswith(f"/{CFG_FILENAME}")}
    published = [row for row in _published_rows(api, repo_id, revision, token, files) if row["sae_id"] in in_repo]
    merged = merge_entries(published, entries)
    undescribed = sorted(in_repo - {entry["sae_id"] for entry in merged})
    (staging / "README.md").write_text(render_card(repo_id, merged, undescribed))
    (staging / CARD_DATA).write_text(json.dumps({"version": CARD_DATA_VERSION, "saes": merged}, indent=1) + "\n")
    return ["README.md", CARD_DATA]


def publish(
    saes: Mapping[str, str | Path] | Sequence[str | Path],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str = "main",
    commit_message: str | None = None,
    card: bool = True,
) -> PublishResult:
    """Upload SAE folders (``{sae_id: folder}``, or folders named by their folder name) to ``repo_id``.

    Creates the repo if needed (``private`` applies to a new repo; an existing public repo is refused when
    ``private=True``). Load the result with ``SAE.from_pretrained(repo_id, sae_id)`` after
    ``import sae_aligned_plugin``.
    """
    check_repo_id(repo_id)
    folders = sae_folders(saes)
    sae_ids = tuple(sae_id for sae_id, _ in folders)
    api = HfApi(token=token)
    entries = card_entries(folders) if card else []
    with tempfile.TemporaryDirectory(prefix="sae_aligned_publish_") as tmp:
        files = stage(folders, Path(tmp))
        try:
            api.create_repo(repo_id, private=private, token=token, exist_ok=True, repo_type="model")
            if private and not getattr(api.repo_info(repo_id, token=token), "private", True):
                raise PublishError(f"{repo_id} exists and is public, but --private was asked: make it private on "
                                   "the hub first, or publish without --private")
            if revision != "main":
                api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
            # the card merges what is on the branch now; parent_commit makes the hub refuse the commit if another
            # upload landed in between (its SAEs would be missing from the card): then retrying merges them too
            parent = None
            if card:
                parent = api.repo_info(repo_id, revision=revision, token=token).sha
                files = sorted(files + stage_card(api, repo_id, parent or revision, token, entries, Path(tmp)))
            commit = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, token=token,
                                       parent_commit=parent,
                                       repo_type="model", commit_message=commit_message or
                                       f"Upload SAEs {', '.join(sae_ids)} with sae-aligned-plugin")
        except PublishError:
            raise
        except Exception as error:  # network, auth, interrupted transfer: all leave the local folders as they were
            raise PublishError(f"upload to {repo_id} failed ({type(error).__name__}: {error}); the local folders are "
                               "unchanged and nothing was committed: run the same command again to retry") from error
    return PublishResult(repo_id, revision, sae_ids, tuple(files), getattr(commit, "commit_url", None))
