"""Framework-free math of the plugin's methods (plain torch, no SAELens / dictionary_learning imports)."""

from sae_aligned_plugin.core.aligned import (
    alignment_scores,
    aligned_encoder,
    project_encoder_to_alignment,
)

__all__ = ["aligned_encoder", "alignment_scores", "project_encoder_to_alignment"]
