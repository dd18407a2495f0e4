"""sae-aligned-plugin: aligned training, MetaSAE joint training and identifiable SAEs for SAELens,
dictionary_learning and SAEBench.

``import sae_aligned_plugin`` registers every architecture with SAELens (safe to import twice).
The dictionary_learning trainers live in :mod:`sae_aligned_plugin.dictionary_learning` (optional extra).
"""

from sae_aligned_plugin.saelens import plugin_architectures, register

register()

__version__ = "0.1.0"
__all__ = ["plugin_architectures", "register", "__version__"]
