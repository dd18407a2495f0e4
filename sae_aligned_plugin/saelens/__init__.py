"""SAELens adapters: the plugin's architectures as SAELens classes, registered by name."""

from sae_aligned_plugin.saelens.aligned import ALIGNED_FAMILIES, AlignedEncoderMixin, AlignedTrainingMixin
from sae_aligned_plugin.saelens.loading import CheckpointError, load_sae, read_sae_folder_config
from sae_aligned_plugin.saelens.registry import (
    UnknownArchitectureError,
    check_sae_config,
    get_training_class,
    known_training_architectures,
    plugin_architectures,
    register,
)

# Export the generated classes by name, e.g. ``AlignedTopKTrainingSAEConfig``.
globals().update({cls.__name__: cls for family in ALIGNED_FAMILIES.values() for cls in family[:4]})

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
    *sorted(cls.__name__ for family in ALIGNED_FAMILIES.values() for cls in family[:4]),
]
