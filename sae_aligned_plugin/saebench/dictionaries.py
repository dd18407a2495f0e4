"""dictionary_learning dictionaries as SAELens SAEs, and SAEBench's dictionary_learning loader table.

A ``trainSAE`` folder (``ae.pt`` + ``config.json``) read by the plugin's safe loader becomes the SAELens SAE with
the same forward pass, so SAEBench (and ``publish``/``diagnose``) treat it like any SAELens SAE:

* ``AutoEncoder`` family (ReLU; the plugin's ``AlignedAutoEncoder``)         → ``StandardSAE``
* ``AutoEncoderTopK`` family (``AlignedAutoEncoderTopK``)                     → ``TopKSAE`` (same ``k``)
* ``BatchTopKSAE`` family (``AlignedBatchTopKSAE``, the MetaSAE dictionaries'
  primary), inference threshold θ                                            → ``JumpReLUSAE`` (θ for every latent)
* a MetaSAE dictionary's meta SAE (:func:`dictionary_meta_sae`, ``meta=True``) → the same ``jumprelu`` SAE the
  SAELens MetaSAE export writes to ``meta_sae/``
* the plugin's signed ``ISAEDictionary`` / ``ISAEMEDictionary``               → ``isae`` / ``isae_me``

:func:`register_trainer_loaders` adds the plugin's trainer classes to SAEBench's mutable ``TRAINER_LOADERS``
table (``sae_bench/custom_saes/run_all_evals_dictionary_learning_saes.py``), so that script loads our folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sae_aligned_plugin.metrics.weights import encoder_decoder_rows
from sae_aligned_plugin.saebench.adapter import prepare_sae

DEFAULT_CONTEXT_SIZE = 128
"""dictionary_learning's ``ActivationBuffer`` default ``ctx_len``, used when ``config.json`` has no buffer section."""


Converted = tuple[dict[str, Any], dict[str, torch.Tensor]]
"""SAELens config entries (``architecture``, ``k``, ...) and the state dict of a converted dictionary."""


def _linear(dictionary: Any, b_dec: torch.Tensor) -> dict[str, torch.Tensor]:
    encoder, decoder = encoder_decoder_rows(dictionary)
    return {"W_enc": encoder.T.contiguous(), "W_dec": decoder.contiguous(),
            "b_enc": dictionary.encoder.bias.detach().float(), "b_dec": b_dec.detach().float()}


def _relu(dictionary: Any) -> Converted:
    return {"architecture": "standard", "apply_b_dec_to_input": True}, _linear(dictionary, dictionary.bias)


def _topk(dictionary: Any) -> Converted:
    return ({"architecture": "topk", "apply_b_dec_to_input": True, "k": int(dictionary.k)},
            _linear(dictionary, dictionary.b_dec))


def _batchtopk(dictionary: Any) -> Converted:
    threshold = float(dictionary.threshold)
    if threshold < 0:
        raise ValueError(
            "this BatchTopK dictionary has no inference threshold yet (threshold = -1: training stopped before "
            "threshold_start_step); train past it, or set threshold_start_step below steps"
        )
    state = _linear(dictionary, dictionary.b_dec)
    state["threshold"] = torch.full_like(state["b_enc"], threshold)
    return {"architecture": "jumprelu", "apply_b_dec_to_input": True}, state


def _isae(dictionary: Any) -> Converted:
    if not bool(dictionary.signed):
        raise TypeError("an unsigned (TopK-rung) ISAEDictionary has no SAELens class; only signed iSAE / iSAE-ME "
                        "dictionaries convert")
    steps = int(dictionary.encoder_steps)
    cfg: dict[str, Any] = {"architecture": "isae" if steps == 1 else "isae_me", "k": int(dictionary.k)}
    state = {name: tensor.detach().float() for name, tensor in dictionary.state_dict().items()
             if name.startswith("W_") or name == "b_dec"}
    state["b_enc"] = torch.zeros(dictionary.dict_size)
    if steps > 1:
        cfg.update(encoder_steps=steps, step_matrix_rank=dictionary.step_matrix_rank)
    return cfg, state


def _convert(dictionary: Any) -> Converted:
    """The SAELens form of a supported dictionary (subclasses included, most specific family first)."""
    from dictionary_learning.dictionary import AutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    from sae_aligned_plugin.dictionary_learning.isae import ISAEDictionary

    families = ((ISAEDictionary, _isae), (BatchTopKSAE, _batchtopk), (AutoEncoderTopK, _topk), (AutoEncoder, _relu))
    for base, convert in families:
        if isinstance(dictionary, base):
            return convert(dictionary)
    raise TypeError(
        f"no SAELens/SAEBench conversion for {type(dictionary).__name__}; supported: "
        f"{', '.join(base.__name__ for base, _ in families)} and their subclasses (the plugin's dictionaries included)"
    )


def _metadata(config: dict[str, Any]) -> dict[str, Any]:
    """SAEBench's metadata fields from a ``trainSAE`` config (its own loaders use the same defaults)."""
    trainer = config["trainer"]
    layer = trainer.get("layer")
    return {
        "model_name": trainer.get("lm_name"),
        "hook_name": None if layer is None else f"blocks.{layer}.hook_resid_post",
        "context_size": (config.get("buffer") or {}).get("ctx_len", DEFAULT_CONTEXT_SIZE),
        "prepend_bos": True,
        "training_architecture": f"dictionary_learning:{trainer.get('trainer_class')}",
        "dictionary_learning": {key: trainer.get(key) for key in ("trainer_class", "dict_class", "submodule_name")},
    }


@torch.no_grad()
def dictionary_to_sae(dictionary: Any, config: dict[str, Any]) -> Any:
    """The SAELens inference SAE computing the same codes and reconstruction as ``dictionary``.

    ``config`` is the parsed ``config.json`` (as returned by ``load_dictionary``); its ``lm_name``, ``layer`` and
    buffer ``ctx_len`` fill the metadata (hook ``blocks.{layer}.hook_resid_post``, as SAEBench's loaders assume).
    """
    from sae_lens import SAE

    cfg, state = _convert(dictionary)
    decoder = state["W_dec"]
    cfg.update(d_in=decoder.shape[1], d_sae=decoder.shape[0], metadata=_metadata(config))
    sae = SAE.from_dict(cfg)
    sae.load_state_dict({name: tensor.to(sae.W_dec.device) for name, tensor in state.items()})
    return sae


def dictionary_meta_sae(dictionary: Any, config: dict[str, Any]) -> Any:
    """The meta SAE of a MetaSAE dictionary (``MetaSAETrainer`` / ``AlignedMetaSAETrainer`` runs) as a SAELens
    ``jumprelu`` SAE over the primary's unit-norm decoder rows, as the SAELens MetaSAE export writes it."""
    from sae_aligned_plugin.core.metasae import MetaSAE
    from sae_aligned_plugin.saelens.metasae import meta_sae_to_saelens

    meta = getattr(dictionary, "meta_sae", None)
    if not isinstance(meta, MetaSAE):
        raise TypeError(f"{type(dictionary).__name__} has no meta SAE: only the dictionaries of MetaSAETrainer and "
                        "AlignedMetaSAETrainer runs do")
    metadata = _metadata(config)
    return meta_sae_to_saelens(meta, primary_architecture=metadata["training_architecture"],
                               primary_d_sae=int(dictionary.dict_size), model_name=metadata["model_name"],
                               hook_name=metadata["hook_name"], meta_steps_trained=None)


def load_dictionary_as_sae(path: str | Path, device: str = "cpu", *, meta: bool = False) -> Any:
    """A ``trainSAE`` output folder as a SAELens SAE (plugin loader: ``weights_only``, clear errors); ``meta``: the
    meta SAE of a MetaSAE run instead of the primary."""
    from sae_aligned_plugin.dictionary_learning import load_dictionary

    dictionary, config = load_dictionary(path)
    return (dictionary_meta_sae if meta else dictionary_to_sae)(dictionary, config).to(device)


def load_dictionary_learning_sae(
    repo_id: str,
    filename: str,
    model_name: str,
    device: Any,
    dtype: torch.dtype,
    layer: int | None = None,
    local_dir: str | None = None,
) -> Any:
    """A ``TRAINER_LOADERS`` entry: SAEBench calls it with a hub ``repo_id`` and ``<folder>/ae.pt``.

    Downloads ``ae.pt`` and ``config.json`` with ``hf_hub_download`` (HF cache, or ``local_dir``), loads them with
    the plugin's loader and returns an SAEBench-ready SAELens SAE with SAEBench's ``model_name``.
    """
    from huggingface_hub import hf_hub_download

    if not filename.endswith("ae.pt"):
        raise ValueError(f"expected a path to an ae.pt file, got {filename!r}")
    weights = Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=local_dir))
    hf_hub_download(repo_id=repo_id, filename=filename[: -len("ae.pt")] + "config.json", local_dir=local_dir)
    sae = load_dictionary_as_sae(weights.parent)
    stored_layer = sae.cfg.metadata.hook_name
    if layer is not None and stored_layer != f"blocks.{layer}.hook_resid_post":
        raise ValueError(f"{repo_id}/{filename}: trained on {stored_layer}, but layer={layer} was requested")
    return prepare_sae(sae, model_name=model_name).to(device=device, dtype=dtype)


def register_trainer_loaders() -> list[str]:
    """Add every plugin dictionary_learning trainer class to SAEBench's ``TRAINER_LOADERS``; returns the names."""
    import sae_bench.custom_saes.run_all_evals_dictionary_learning_saes as runner

    import sae_aligned_plugin.dictionary_learning as plugin_dl

    names = [name for name in plugin_dl.__all__ if name.endswith("Trainer")]
    for name in names:
        runner.TRAINER_LOADERS[name] = load_dictionary_learning_sae
    return names
