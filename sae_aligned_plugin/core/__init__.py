"""Framework-free math of the plugin's methods (plain torch, no SAELens / dictionary_learning imports)."""

from sae_aligned_plugin.core.aligned import (
    alignment_scores,
    aligned_encoder,
    project_encoder_to_alignment,
)
from sae_aligned_plugin.core.metasae import (
    MetaCritic,
    MetaSAE,
    MetaSAEConfig,
    decomposability_penalty,
    loss_scale,
)

__all__ = [
    "MetaCritic",
    "MetaSAE",
    "MetaSAEConfig",
    "aligned_encoder",
    "alignment_scores",
    "decomposability_penalty",
    "loss_scale",
    "project_encoder_to_alignment",
]
