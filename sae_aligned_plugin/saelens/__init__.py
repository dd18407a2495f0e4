"""SAELens adapters: the plugin's architectures as SAELens classes, registered by name."""

from sae_aligned_plugin.saelens.aligned import ALIGNED_FAMILIES, AlignedEncoderMixin, AlignedTrainingMixin
from sae_aligned_plugin.saelens.registry import (
    UnknownArchitectureError,
    get_training_class,
    known_training_architectures,
    plugin_architectures,
    register,
    training_config_from_dict,
)

# Export the generated classes by name, e.g. ``AlignedTopKTrainingSAEConfig``.
globals().update({cls.__name__: cls for family in ALIGNED_FAMILIES.values() for cls in family[:4]})

__all__ = [
    "ALIGNED_FAMILIES",
    "AlignedEncoderMixin",
    "AlignedTrainingMixin",
    "UnknownArchitectureError",
    "get_training_class",
    "known_training_architectures",
    "plugin_architectures",
    "register",
    "training_config_from_dict",
    *sorted(cls.__name__ for family in ALIGNED_FAMILIES.values() for cls in family[:4]),
]
