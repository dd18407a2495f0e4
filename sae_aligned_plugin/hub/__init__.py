"""Hugging Face publishing and download of SAELens SAE folders (SAELens's repo layout, plus a model card).

* :func:`publish`: upload SAE folders with ``huggingface_hub`` (token, private repos, branches, model card).
* :func:`pull`: download one published SAE folder; or load directly with
  ``SAE.from_pretrained("user/repo", "sae_id")`` after ``import sae_aligned_plugin``.
"""

from sae_aligned_plugin.hub.card import model_card
from sae_aligned_plugin.hub.upload import PublishError, PublishResult, check_repo_id, publish, sae_folders
from sae_aligned_plugin.hub.pull import pull

__all__ = ["PublishError", "PublishResult", "check_repo_id", "model_card", "publish", "pull", "sae_folders"]
