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


CARD_DATA = "sae_aligned_card.json"
"""The card's rows as data (``{"version": CARD_DATA_VERSION, "saes": [...]}``), published beside ``README.md``: a
later upload to the same repo and branch reads it back, so the card keeps listing every SAE published there, not
only the last upload's."""
CARD_DATA_VERSION = 1


def card_entries(saes: Sequence[tuple[str, Path]]) -> list[dict[str, Any]]:
    """The card's rows of ``saes`` (``(sae_id, folder)`` pairs, each a SAELens SAE folder), JSON-ready."""
    entries = []
    for sae_id, folder in saes:
        r = weight_diagnostics(load_sae(folder), folder)
        sparsity, align, sae = r["training_sparsity"] or {}, r["alignment"], r["sae"]
        runner = _runner_config(folder)
        entries.append({
            "sae_id": sae_id,
            "training_architecture": sae["training_architecture"],
            "sae": [_trained_as(sae), sae["architecture"], sae["model_name"], sae["hook_name"], sae["d_in"],
                    sae["d_sae"], sae["k"]],
            "diagnostics": [align["raw_mean"], align["max_abs_deviation_from_one"], align["bimodality_cosine"],
                            r["decoder_norms"]["min"], r["decoder_norms"]["max"], sparsity.get("fraction_dead"),
                            r["saelens_metadata"].get("l0")],
            "training": [runner.get(key) for key in RUNNER_FIELDS] if runner else None,
        })
    return entries


def merge_entries(published: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``published`` rows in their order with the ones ``new`` re-uploads replaced, then the other ``new`` rows."""
    by_id = {entry["sae_id"]: entry for entry in new}
    merged = [by_id.pop(entry["sae_id"], entry) for entry in published]
    return merged + [entry for entry in new if entry["sae_id"] in by_id]


def render_card(repo_id: str, entries: Sequence[dict[str, Any]], undescribed: Sequence[str] = ()) -> str:
    """Markdown card listing ``entries`` (from :func:`card_entries`) and, without details, ``undescribed`` SAE ids
    found in the repo (uploaded without this card's data)."""
    architectures = sorted({entry["training_architecture"] for entry in entries})
    front = {"library_name": "saelens",
             "tags": ["sae-aligned-plugin", "saelens", "sparse-autoencoder", "interpretability", *architectures]}
    first = entries[0]["sae_id"]
    sae_rows = [(f"`{e['sae_id']}`", *e["sae"]) for e in entries]
    sae_rows += [(f"`{sae_id}`", "(not described: uploaded without sae-aligned-plugin's card data)",
                  *[None] * 6) for sae_id in sorted(undescribed)]
    diag_rows = [(f"`{e['sae_id']}`", *e["diagnostics"]) for e in entries]
    training_rows = [(f"`{e['sae_id']}`", *(e["training"] or [None] * len(RUNNER_FIELDS))) for e in entries]
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
        "## Training\n\n" + (_table(("sae_id", *RUNNER_FIELDS), training_rows) if any(e["training"] for e in entries)
                             else "No `runner_cfg.json` was published with these SAEs."),
        "## Diagnostics\n\nFrom the weights (`sae-aligned diagnose`): alignment score ⟨e_i, d_i⟩ (mean, and the "
        "largest |⟨e_i, d_i⟩ − 1| / (‖e_i‖‖d_i‖), ≈ 0 for aligned SAEs), bimodality coefficient of the cosine "
        "(> 0.555 suggests bimodality), decoder row norms, dead fraction over SAELens's last training window, "
        "and L0 as SAELens recorded it.\n\n"
        + _table(("sae_id", "alignment mean", "max deviation from 1", "bimodality (cosine)", "decoder norm min",
                  "decoder norm max", "dead fraction (training)", "L0 (training)"), diag_rows),
        "## Evaluate\n\n```bash\nsae-aligned eval " + f"{repo_id} --sae-id {first} --evals core,meta_structure\n```",
    ]) + "\n"


def model_card(repo_id: str, saes: Sequence[tuple[str, Path]]) -> str:
    """Markdown card for ``saes`` (``(sae_id, folder)`` pairs, each a SAELens SAE folder)."""
    return render_card(repo_id, card_entries(saes))
