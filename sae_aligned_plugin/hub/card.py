"""The model card (``README.md``) of a published repo: front matter, how to load, training metadata, diagnostics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from sae_aligned_plugin.diagnose import weight_diagnostics
from sae_aligned_plugin.saelens.loading import load_sae

RUNNER_FIELDS = ("model_name", "hook_name", "dataset_path", "context_size", "training_tokens",
                 "train_batch_size_tokens", "lr", "lr_scheduler_name", "lr_warm_up_steps", "seed", "dtype")
"""``runner_cfg.json`` fields shown in the card (SAELens's ``LanguageModelSAERunnerConfig``)."""


def load_lines(repo_id: str, sae_id: str) -> str:
    """The two lines a reader needs to load one SAE."""
    return f'import sae_aligned_plugin, sae_lens\nsae = sae_lens.SAE.from_pretrained("{repo_id}", "{sae_id}")'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "–" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows])


def _trained_as(sae: dict[str, Any]) -> str:
    return f"meta SAE of {sae['meta_sae_of']}" if sae.get("meta_sae_of") else str(sae["training_architecture"])


def _runner_config(folder: Path) -> dict[str, Any]:
    path = folder / "runner_cfg.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def model_card(repo_id: str, saes: Sequence[tuple[str, Path]]) -> str:
    """Markdown card for ``saes`` (``(sae_id, folder)`` pairs, each a SAELens SAE folder)."""
    reports = {sae_id: weight_diagnostics(load_sae(folder), folder) for sae_id, folder in saes}
    runners = {sae_id: _runner_config(folder) for sae_id, folder in saes}
    architectures = sorted({report["sae"]["training_architecture"] for report in reports.values()})
    front = {"library_name": "saelens",
             "tags": ["sae-aligned-plugin", "saelens", "sparse-autoencoder", "interpretability", *architectures]}
    first = saes[0][0]
    sae_rows = [(f"`{sae_id}`", _trained_as(r["sae"]), r["sae"]["architecture"], r["sae"]["model_name"],
                 r["sae"]["hook_name"], r["sae"]["d_in"], r["sae"]["d_sae"], r["sae"]["k"])
                for sae_id, r in reports.items()]
    diag_rows = []
    for sae_id, r in reports.items():
        sparsity, align = r["training_sparsity"] or {}, r["alignment"]
        diag_rows.append((f"`{sae_id}`", align["raw_mean"], align["max_abs_deviation_from_one"],
                          align["bimodality_cosine"], r["decoder_norms"]["min"], r["decoder_norms"]["max"],
                          sparsity.get("fraction_dead"), r["saelens_metadata"].get("l0")))
    training_rows = [(f"`{sae_id}`", *(runner.get(key) for key in RUNNER_FIELDS)) for sae_id, runner in runners.items()]
    return "\n\n".join([
        "---\n" + yaml.safe_dump(front, sort_keys=False).strip() + "\n---",
        f"# Sparse autoencoders: `{repo_id}`",
        "Trained with [SAELens](https://github.com/decoderesearch/SAELens) and `sae-aligned-plugin` "
        f"({', '.join(architectures)}). Each SAE is a folder in SAELens's layout (`<sae_id>/cfg.json`, "
        "`sae_weights.safetensors`).",
        "## Load\n\n`pip install sae-aligned-plugin`, then:\n\n```python\n" + load_lines(repo_id, first) + "\n```\n\n"
        "(`import sae_aligned_plugin` registers the plugin's architectures with SAELens.) Or download a folder: "
        f"`sae-aligned pull {repo_id} {first} --output saes/`.",
        "## SAEs\n\n" + _table(("sae_id", "trained as", "exported as", "model", "hook", "d_in", "d_sae", "k"),
                                sae_rows),
        "## Training\n\n" + (_table(("sae_id", *RUNNER_FIELDS), training_rows) if any(runners.values())
                             else "No `runner_cfg.json` was published with these SAEs."),
        "## Diagnostics\n\nFrom the weights (`sae-aligned diagnose`): alignment score ⟨e_i, d_i⟩ (mean, and the "
        "largest |⟨e_i, d_i⟩ − 1| / (‖e_i‖‖d_i‖), ≈ 0 for aligned SAEs), bimodality coefficient of the cosine "
        "(> 0.555 suggests bimodality), decoder row norms, dead fraction over SAELens's last training window, "
        "and L0 as SAELens recorded it.\n\n"
        + _table(("sae_id", "alignment mean", "max deviation from 1", "bimodality (cosine)", "decoder norm min",
                  "decoder norm max", "dead fraction (training)", "L0 (training)"), diag_rows),
        "## Evaluate\n\n```bash\nsae-aligned eval " + f"{repo_id} --sae-id {first} --evals core,meta_structure\n```",
    ]) + "\n"
