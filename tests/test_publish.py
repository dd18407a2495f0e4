"""``publish`` → hub → ``SAE.from_pretrained`` / ``pull`` round trip against a local stand-in for the hub.

The stand-in replaces ``HfApi`` in the publish module: ``upload_folder`` commits the staged folder into a
Hugging Face *cache* layout (``models--org--repo/snapshots/<commit>/...`` + ``refs/<branch>``), which SAELens and
``snapshot_download`` then read under ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub.constants
import pytest
import torch
import yaml
from safetensors.torch import save_file
from sae_lens import SAE

from helpers import make_sae, train_steps
from sae_aligned_plugin import cli
from sae_aligned_plugin.hub import PublishError, model_card, publish, pull
from sae_aligned_plugin.hub import upload as publish_module
from sae_aligned_plugin.hub.card import card_entries, load_lines
from sae_aligned_plugin.saelens import CheckpointError, load_sae

REPO = "alice/saes"
EXPECTED = ["README.md", "run/cfg.json", "run/meta_sae/cfg.json", "run/meta_sae/sae_weights.safetensors",
            "run/runner_cfg.json", "run/sae_weights.safetensors", "run/sparsity.safetensors", "sae_aligned_card.json"]
SAE_FILES = [path for path in EXPECTED if path.startswith("run/")]


class FakeHub:
    """Repos, calls and commits of a pretend hub whose storage is a local Hugging Face cache."""

    def __init__(self, cache: Path, fail_after: int | None = None) -> None:
        self.cache, self.fail_after = cache, fail_after
        self.private: dict[str, bool] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.commits = 0

    def repo_dir(self, repo_id: str) -> Path:
        return self.cache / f"models--{repo_id.replace('/', '--')}"

    def head(self, repo_id: str, revision: str = "main") -> str | None:
        """The commit a branch points to, a commit id given as is, or ``None`` for a branch with no commit."""
        if (self.repo_dir(repo_id) / "snapshots" / revision).is_dir():
            return revision
        ref = self.repo_dir(repo_id) / "refs" / revision
        return ref.read_text() if ref.is_file() else None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.head(repo_id, revision)
        if commit is None:
            return {}
        snapshot = self.repo_dir(repo_id) / "snapshots" / commit
        return {str(p.relative_to(snapshot)): p.read_bytes() for p in sorted(snapshot.rglob("*")) if p.is_file()}


class FakeHfApi:
    """The ``HfApi`` methods publish uses; ``upload_folder`` is one commit, interrupted after ``fail_after`` files."""

    def __init__(self, hub: FakeHub, token: str | None = None) -> None:
        self.hub, self.token = hub, token

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        self.hub.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        self.hub.private.setdefault(repo_id, kwargs.get("private", False))

    def repo_info(self, repo_id: str, *, revision: str = "main", **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(private=self.hub.private[repo_id], sha=self.hub.head(repo_id, revision))

    def create_branch(self, repo_id: str, **kwargs: Any) -> None:
        self.hub.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def list_repo_files(self, repo_id: str, *, revision: str = "main", **kwargs: Any) -> list[str]:
        return sorted(self.hub.files(repo_id, revision))

    def hf_hub_download(self, repo_id: str, filename: str, *, revision: str = "main", **kwargs: Any) -> str:
        return str(self.hub.repo_dir(repo_id) / "snapshots" / self.hub.head(repo_id, revision) / filename)

    def upload_folder(self, *, repo_id: str, folder_path: str, revision: str = "main",
                      parent_commit: str | None = None, **kwargs: Any) -> Any:
        self.hub.calls.append(("upload_folder", {"repo_id": repo_id, "revision": revision, **kwargs}))
        if parent_commit is not None and parent_commit != self.hub.head(repo_id, revision):
            raise RuntimeError("412 Precondition Failed: the branch has moved since parent_commit")
        staged = sorted(p for p in Path(folder_path).rglob("*") if p.is_file())
        pending = Path(tempfile.mkdtemp(dir=self.hub.cache))
        old = self.hub.files(repo_id, revision)
        for path, content in old.items():  # a commit keeps the files already in the branch
            (pending / path).parent.mkdir(parents=True, exist_ok=True)
            (pending / path).write_bytes(content)
        for count, path in enumerate(staged):
            if self.hub.fail_after is not None and count == self.hub.fail_after:
                shutil.rmtree(pending)
                raise ConnectionError("connection reset by peer")
            target = pending / path.relative_to(folder_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        self.hub.commits += 1
        commit = hashlib.sha1(f"{repo_id}{self.hub.commits}".encode()).hexdigest()
        repo = self.hub.repo_dir(repo_id)
        (repo / "snapshots").mkdir(parents=True, exist_ok=True)
        pending.rename(repo / "snapshots" / commit)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub-cache")
    fake.cache.mkdir()
    monkeypatch.setattr(publish_module, "HfApi", lambda token=None: FakeHfApi(fake, token))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(fake.cache))
    return fake


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MetaSAE export (primary + ``meta_sae/``) with SAELens's extra files and two things not to upload."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    sae = make_sae("metasae_batchtopk")
    train_steps(sae, 12)
    sae.save_inference_model(folder)
    save_file({"sparsity": torch.full((64,), -2.0)}, str(folder / "sparsity.safetensors"))
    (folder / "runner_cfg.json").write_text(json.dumps({"model_name": "tiny-random", "lr": 3e-4, "seed": 7}))
    (folder / "notes.txt").write_text("local notes")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "step_10.pt").write_bytes(b"not uploaded")
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def state(sae: Any) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in sae.state_dict().items()}


def test_publish_then_load_with_from_pretrained_and_pull(hub, run_folder, tmp_path):
    before = contents(run_folder)
    result = publish({"run": run_folder}, REPO, token="hf_secret", private=True)

    assert result.sae_ids == ("run", "run/meta_sae") and list(result.files) == EXPECTED
    assert hub.calls[0] == ("create_repo", {"repo_id": REPO, "private": True, "token": "hf_secret",
                                            "exist_ok": True, "repo_type": "model"})
    assert hub.calls[1][0] == "upload_folder" and hub.calls[1][1]["token"] == "hf_secret"
    remote = hub.files(REPO)
    assert sorted(remote) == EXPECTED
    assert all(remote[path] == before[path.removeprefix("run/")] for path in SAE_FILES)
    assert contents(run_folder) == before                                  # the user's folder is only read

    for sae_id, folder in (("run", run_folder), ("run/meta_sae", run_folder / "meta_sae")):
        loaded, local = SAE.from_pretrained(REPO, sae_id), load_sae(folder)
        assert type(loaded) is type(local)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state(local).items())

    pulled = pull(REPO, "run", tmp_path / "pulled")
    assert pulled == tmp_path / "pulled" / "run"
    assert contents(pulled) == {path.removeprefix("run/"): remote[path] for path in SAE_FILES}
    with pytest.raises(FileNotFoundError, match="no SAE 'nope' in alice/saes; published SAE ids: \\['run', "
                                                "'run/meta_sae'\\]"):
        pull(REPO, "nope", tmp_path / "pulled")


def test_model_card_front_matter_metadata_and_load_lines(hub, run_folder):
    publish({"run": run_folder}, REPO)
    card = hub.files(REPO)["README.md"].decode()
    assert card == model_card(REPO, [("run", run_folder), ("run/meta_sae", run_folder / "meta_sae")])
    _, front, body = card.split("---\n", 2)
    assert yaml.safe_load(front) == {"library_name": "saelens", "tags": [
        "sae-aligned-plugin", "saelens", "sparse-autoencoder", "interpretability", "jumprelu", "metasae_batchtopk"]}
    assert "```python\n" + load_lines(REPO, "run") + "\n```" in body
    assert load_lines(REPO, "run") == ('import sae_aligned_plugin, sae_lens\n'
                                       'sae = sae_lens.SAE.from_pretrained("alice/saes", "run")')
    assert "| `run` | metasae_batchtopk | jumprelu | – | – | 16 | 64 | – |" in body
    assert "| `run/meta_sae` | meta SAE of metasae_batchtopk | jumprelu | – | – | 16 | 6 | – |" in body
    assert "| `run` | tiny-random | – | – | – | – | – | 0.0003 | – | – | 7 | – |" in body   # runner_cfg.json
    diagnostics = body.split("## Diagnostics")[1].splitlines()
    run_row = next(line for line in diagnostics if line.startswith("| `run` |")).strip("| ").split(" | ")
    assert run_row[4:7] == ["1", "1", "0"]             # unit decoder rows; no latent dead at log10 rate −2


def test_later_uploads_to_the_same_repo_keep_every_sae_in_the_card(hub, run_folder, tmp_path):
    other = tmp_path / "other"
    sae = make_sae("aligned_topk")
    train_steps(sae, 3)
    sae.save_inference_model(other)
    publish({"legacy": other}, REPO, card=False)                  # e.g. uploaded by another tool: no card data
    publish({"run": run_folder}, REPO)
    publish({"topk": other}, REPO)
    publish({"run": run_folder}, REPO)                             # a re-upload replaces its rows, no duplicates

    remote = hub.files(REPO)
    data = json.loads(remote["sae_aligned_card.json"])["saes"]
    assert [entry["sae_id"] for entry in data] == ["run", "run/meta_sae", "topk"]
    assert data == json.loads(json.dumps(
        card_entries([("run", run_folder), ("run/meta_sae", run_folder / "meta_sae"), ("topk", other)])))
    body = remote["README.md"].decode()
    sae_rows = [line for line in body.split("## SAEs")[1].split("## Training")[0].splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[0] for row in sae_rows] == ["| `run`", "| `run/meta_sae`", "| `topk`", "| `legacy`"]
    assert "| `topk` | aligned_topk | topk |" in body
    assert "| `legacy` | (not described: uploaded without sae-aligned-plugin's card data) |" in body
    assert "- aligned_topk\n- jumprelu\n- metasae_batchtopk" in body.split("---")[1]   # front-matter tags, sorted
    assert len(body.split("## Diagnostics")[1].split("| `")) - 1 == 3  # diagnostics of the three described SAEs

    snapshot = hub.repo_dir(REPO) / "snapshots" / hub.head(REPO)
    (snapshot / "topk" / "cfg.json").unlink()                      # "topk" deleted from the repo by hand
    (snapshot / "sae_aligned_card.json").write_text("{not json")   # and the card data damaged
    publish({"new": other}, REPO)
    data = json.loads(hub.files(REPO)["sae_aligned_card.json"])
    assert data["version"] == 1 and [entry["sae_id"] for entry in data["saes"]] == ["new"]
    body = hub.files(REPO)["README.md"].decode()
    assert all(f"| `{sae_id}` | (not described" in body for sae_id in ("legacy", "run", "run/meta_sae"))
    assert "| `topk` |" not in body


def test_an_upload_that_lands_while_the_card_is_merged_is_not_lost(hub, run_folder, tmp_path, monkeypatch):
    other = tmp_path / "other"
    make_sae("aligned_topk").save_inference_model(other)
    publish({"first": other}, REPO)
    real_download = FakeHfApi.hf_hub_download

    def racing_download(self, *args, **kwargs):  # another user's upload lands while we read the card data
        monkeypatch.setattr(FakeHfApi, "hf_hub_download", real_download)
        publish({"racer": other}, REPO)
        return real_download(self, *args, **kwargs)

    monkeypatch.setattr(FakeHfApi, "hf_hub_download", racing_download)
    with pytest.raises(PublishError, match="412 .*run the same command again"):
        publish({"run": run_folder}, REPO)
    assert [e["sae_id"] for e in json.loads(hub.files(REPO)["sae_aligned_card.json"])["saes"]] == ["first", "racer"]
    publish({"run": run_folder}, REPO)                               # the retry merges the racer's SAE too
    ids = [e["sae_id"] for e in json.loads(hub.files(REPO)["sae_aligned_card.json"])["saes"]]
    assert ids == ["first", "racer", "run", "run/meta_sae"]


def test_cli_eval_and_diagnose_a_published_sae_by_repo_id(hub, run_folder, tmp_path):
    publish({"run": run_folder}, REPO)
    assert cli.main(["eval", REPO, "--sae-id", "run", "--evals", "meta_structure", "--model-name", "tiny-random",
                     "--hook-name", "blocks.0.hook_resid_post", "--meta-train-steps", "20", "--meta-batch-size", "16",
                     "--output-folder", str(tmp_path / "results")]) == 0
    saved = json.loads((tmp_path / "results" / "meta_structure" / "alice_saes__run_custom_sae_eval_results.json")
                       .read_text())
    assert saved["sae_lens_release_id"] == "alice_saes__run" and saved["sae_cfg_dict"]["d_sae"] == 64
    assert cli.main(["diagnose", REPO, "--sae-id", "run/meta_sae", "--output", str(tmp_path / "diag")]) == 0
    report = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert report["sae"]["meta_sae_of"] == "metasae_batchtopk" and report["sae"]["d_sae"] == 6


def test_interrupted_upload_keeps_local_files_and_can_be_retried(hub, run_folder):
    before = contents(run_folder)
    staging = set(Path(tempfile.gettempdir()).glob("sae_aligned_publish_*"))
    hub.fail_after = 3
    with pytest.raises(PublishError, match="ConnectionError.*local folders are unchanged.*retry"):
        publish({"run": run_folder}, REPO)
    assert contents(run_folder) == before and hub.files(REPO) == {}        # nothing committed
    assert set(Path(tempfile.gettempdir()).glob("sae_aligned_publish_*")) == staging
    hub.fail_after = None
    assert list(publish({"run": run_folder}, REPO).files) == EXPECTED
    assert sorted(hub.files(REPO)) == EXPECTED and contents(run_folder) == before


def test_cli_publish_to_a_branch_of_a_private_repo(hub, run_folder, capsys):
    assert cli.main(["publish", f"v1={run_folder}", "--repo", REPO, "--private", "--token", "hf_x",
                     "--revision", "dev", "--no-card"]) == 0
    assert ("create_branch", {"repo_id": REPO, "branch": "dev", "token": "hf_x", "exist_ok": True}) in hub.calls
    assert sorted(hub.files(REPO, "dev")) == sorted(p.replace("run/", "v1/") for p in SAE_FILES)
    assert hub.files(REPO) == {}
    out = capsys.readouterr().out
    assert "published 2 SAE(s) to alice/saes@dev: v1, v1/meta_sae" in out
    assert "sae_lens.SAE.from_pretrained('alice/saes', 'v1')" in out


def test_private_requested_for_an_existing_public_repo_is_refused(hub, run_folder):
    hub.private[REPO] = False
    with pytest.raises(PublishError, match="exists and is public"):
        publish({"run": run_folder}, REPO, private=True)
    assert hub.files(REPO) == {}


def test_bad_input(hub, run_folder, tmp_path):
    with pytest.raises(ValueError, match="repo id 'saes' has no namespace: use 'your-username/saes'"):
        publish([run_folder], "saes")
    with pytest.raises(SystemExit, match="has no namespace"):
        cli.main(["publish", str(run_folder), "--repo", "saes"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no cfg.json"):
        publish([tmp_path / "empty"], REPO)
    with pytest.raises(SystemExit, match="no cfg.json"):
        cli.main(["publish", str(tmp_path / "empty"), "--repo", REPO])
    with pytest.raises(SystemExit, match="two SAEs would be published as 'run'"):
        cli.main(["publish", str(run_folder), f"run={tmp_path}", "--repo", REPO])
    with pytest.raises(ValueError, match="invalid sae_id"):
        publish({"../up": run_folder}, REPO)
    with pytest.raises(ValueError, match="duplicate sae_id.*'run/meta_sae'"):
        publish({"run": run_folder, "run/meta_sae": run_folder / "meta_sae"}, REPO)
    assert hub.calls == []
