"""SAELens adapters: the plugin's architectures as SAELens classes, registered by name."""

from sae_aligned_plugin.saelens.aligned import ALIGNED_FAMILIES, AlignedEncoderMixin, AlignedTrainingMixin
from sae_aligned_plugin.saelens.loading import CheckpointError, load_sae, read_sae_folder_config
from sae_aligned_plugin.saelens.registry import (
    UnknownArchitectureError,
    check_sae_config,
    get_training_class,
    known_training_architectures,
    plugin_architectures,
    plugin_families,
    register,
)

# Export the generated classes by name, e.g. ``AlignedTopKTrainingSAEConfig``.
_CLASSES = {cls.__name__: cls for family in plugin_families().values() for cls in family[:4]}
globals().update(_CLASSES)

__all__ = [
    "ALIGNED_FAMILIES",
    "AlignedEncoderMixin",
    "AlignedTrainingMixin",
    "CheckpointError",
    "UnknownArchitectureError",
    "load_sae",
    "read_sae_folder_config",
    "check_sae_config",
    "get_training_class",
    "known_training_architectures",
    "plugin_architectures",
    "register",
    "plugin_families",
    *sorted(_CLASSES),
]
