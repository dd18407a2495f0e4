"""Offline test environment: no hub, no wandb, and the plugin registered before any test imports SAELens."""

import os

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "JAXTYPING_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

import sae_aligned_plugin  # noqa: E402,F401  (registers the architectures)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
