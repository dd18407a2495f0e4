"""Aligned training for dictionary_learning 0.1.x (optional extra ``sae-aligned-plugin[dictionary-learning]``).

Importing this subpackage imports ``dictionary_learning``; ``import sae_aligned_plugin`` alone does not. Use the
trainers as ``trainSAE`` trainer classes and :func:`load_dictionary` to read their output folders. Spec:
``shared/papers/aligned_training.md`` §3–5.
"""

from sae_aligned_plugin.dictionary_learning.dictionaries import (
    AlignedAutoEncoder,
    AlignedAutoEncoderTopK,
    AlignedBatchTopKSAE,
    AlignedLinearEncoder,
)
from sae_aligned_plugin.dictionary_learning.isae import ISAEDictionary, ISAEMEDictionary, ISAEMETrainer, ISAETrainer
from sae_aligned_plugin.dictionary_learning.loader import load_dictionary, read_state_dict
from sae_aligned_plugin.dictionary_learning.metasae import (
    AlignedMetaBatchTopKSAE,
    AlignedMetaSAETrainer,
    MetaBatchTopKSAE,
    MetaSAETrainer,
)
from sae_aligned_plugin.dictionary_learning.trainers import (
    AlignedBatchTopKTrainer,
    AlignedPAnnealTrainer,
    AlignedStandardTrainer,
    AlignedTopKTrainer,
)

__all__ = [
    "AlignedAutoEncoder",
    "AlignedAutoEncoderTopK",
    "AlignedBatchTopKSAE",
    "AlignedBatchTopKTrainer",
    "AlignedLinearEncoder",
    "AlignedMetaBatchTopKSAE",
    "AlignedMetaSAETrainer",
    "AlignedPAnnealTrainer",
    "AlignedStandardTrainer",
    "AlignedTopKTrainer",
    "ISAEDictionary",
    "ISAEMEDictionary",
    "ISAEMETrainer",
    "ISAETrainer",
    "MetaBatchTopKSAE",
    "MetaSAETrainer",
    "load_dictionary",
    "read_state_dict",
]
