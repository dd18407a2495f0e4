"""The ``eval``, ``publish``, ``pull`` and ``diagnose`` subcommands of ``sae-aligned`` (argument parsing only;
the work is in :mod:`sae_aligned_plugin.saebench`, :mod:`sae_aligned_plugin.hub` and
:mod:`sae_aligned_plugin.diagnose`)."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

CORE_SUMMARY = ("sparsity.l0", "reconstruction_quality.explained_variance", "reconstruction_quality.mse",
                "reconstruction_quality.cossim", "model_performance_preservation.ce_loss_score",
                "model_behavior_preservation.kl_div_score", "shrinkage.l2_ratio", "misc_metrics.frac_alive")
"""Core metrics printed by ``sae-aligned eval`` (the JSON file has them all)."""


class _UserError(Exception):
    """Marks the errors printed as one line instead of a traceback."""


def _user_errors(handler: Callable[[argparse.Namespace, Sequence[str]], int]) -> Callable[..., int]:
    """Turn bad-input errors into ``SystemExit("sae-aligned <command>: error: ...")``."""
    from huggingface_hub.errors import HfHubHTTPError

    from sae_aligned_plugin.hub import PublishError
    from sae_aligned_plugin.saebench import EvalFailedError, EvalUnavailableError

    @functools.wraps(handler)
    def run(args: argparse.Namespace, rest: Sequence[str]) -> int:
        if rest:
            raise SystemExit(f"sae-aligned {args.command}: error: unrecognized arguments: {' '.join(rest)}")
        try:
            return handler(args, rest)
        except (ValueError, KeyError, FileNotFoundError, EvalFailedError, EvalUnavailableError, PublishError,
                HfHubHTTPError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise SystemExit(f"sae-aligned {args.command}: error: {type(error).__name__}: {message}") from error

    return run


def _offline_model(path: str, context_size: int) -> tuple[Any, Any]:
    """The tiny model and tokens of a config's ``offline`` block (see :mod:`sae_aligned_plugin.training`)."""
    from sae_aligned_plugin.training import offline_model_and_tokens

    config = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    if not isinstance(config, dict) or not isinstance(config.get("offline"), dict):
        raise ValueError(f"{path}: expected a YAML config with an 'offline' block (e.g. "
                         "configs/offline_tiny_aligned_topk.yaml)")
    return offline_model_and_tokens(config["offline"], context_size)


def _eval(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from sae_aligned_plugin.saebench import (
        BASE_METADATA,
        CORE_METADATA,
        CoreOptions,
        check_evals,
        has_signed_codes,
        prepare_sae,
        run_evals,
    )
    from sae_aligned_plugin.sources import open_sae

    evals = [name.strip() for name in args.evals.split(",") if name.strip()]
    check_evals(evals, local_model=args.offline_config is not None, api_key=args.api_key, device=args.device)
    name, sae = open_sae(args.source, args.sae_id, device=args.device)
    required = CORE_METADATA if "core" in evals else BASE_METADATA
    sae = prepare_sae(sae, required=required, model_name=args.model_name, hook_name=args.hook_name,
                      context_size=args.context_size, prepend_bos=args.prepend_bos)
    model = dataset = None
    if args.offline_config is not None:
        model, dataset = _offline_model(args.offline_config, int(sae.cfg.metadata.context_size))
    core = CoreOptions(n_eval_reconstruction_batches=args.n_batches, n_eval_sparsity_variance_batches=args.n_batches,
                       batch_size_prompts=args.batch_size_prompts, dtype=args.dtype, device=args.device,
                       force_rerun=not args.skip_existing)
    meta = {"train_steps": args.meta_train_steps, "train_batch_size": args.meta_batch_size}
    llm = {"llm_batch_size": args.llm_batch_size, "llm_dtype": args.llm_dtype}
    results = run_evals([(name, sae)], evals, args.output_folder, model=model, dataset=dataset, core=core,
                        meta_structure={key: value for key, value in meta.items() if value is not None},
                        options={name: llm for name in evals}, api_key=args.api_key)
    print(f"SAE {name} ({sae.cfg.architecture()}, trained as "
          f"{sae.cfg.metadata.training_architecture or sae.cfg.architecture()}, d_sae={sae.cfg.d_sae})")
    for result in results:
        shown = CORE_SUMMARY if result.eval_name == "core" else tuple(result.metrics)
        print(f"  {result.eval_name}: {result.path}")
        for key in shown:
            if key in result.metrics:
                print(f"    {key:<48} {result.metrics[key]:.6g}")
        for note in result.notes:
            print(f"    note: {note}")
    if has_signed_codes(sae) and "core" not in evals:
        print("  note: signed codes; SAEBench's frac_alive/feature_density count only positive activations")
    return 0


def _publish(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from sae_aligned_plugin.hub import publish

    saes: dict[str, str] = {}
    for item in args.folders:
        sae_id, _, folder = item.partition("=") if "=" in item else (Path(item).resolve().name, "", item)
        if sae_id in saes:
            raise ValueError(f"two SAEs would be published as {sae_id!r}: name them, e.g. {sae_id}_a=FOLDER")
        saes[sae_id] = folder
    result = publish(saes, args.repo, token=args.token, private=args.private, revision=args.revision,
                     commit_message=args.message, card=not args.no_card)
    print(f"published {len(result.sae_ids)} SAE(s) to {result.repo_id}@{result.revision}: {', '.join(result.sae_ids)}")
    print(f"load: import sae_aligned_plugin, sae_lens; sae_lens.SAE.from_pretrained({result.repo_id!r}, "
          f"{result.sae_ids[0]!r})")
    return 0


def _pull(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from sae_aligned_plugin.hub import pull

    folder = pull(args.repo, args.sae_id, args.output, revision=args.revision, token=args.token)
    print(f"{args.repo}/{args.sae_id} -> {folder}")
    return 0


def _activations(args: argparse.Namespace, sae: Any) -> Any:
    """Activation batches for the dead fraction: a safetensors file, or the offline config's tiny model."""
    from sae_aligned_plugin.diagnose import activation_batches, model_activations

    if args.activations is not None:
        from safetensors.torch import load_file

        tensors = load_file(args.activations)
        if len(tensors) != 1:
            raise ValueError(f"{args.activations}: expected one tensor [N, d_in], found {sorted(tensors)}")
        return activation_batches(next(iter(tensors.values())).float())
    if args.offline_config is not None:
        if sae.cfg.metadata.hook_name is None or sae.cfg.metadata.context_size is None:
            raise ValueError("the SAE metadata needs hook_name and context_size to run the offline model")
        model, tokens = _offline_model(args.offline_config, int(sae.cfg.metadata.context_size))
        return activation_batches(model_activations(model, tokens, sae.cfg.metadata.hook_name, n_rows=args.n_rows))
    return None


def _diagnose(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from sae_aligned_plugin.diagnose import diagnose
    from sae_aligned_plugin.sources import open_sae

    name, sae = open_sae(args.source, args.sae_id)
    other_name, other = open_sae(args.compare, args.compare_sae_id) if args.compare else ("other", None)
    folder = args.source if Path(args.source).is_dir() else None
    report = diagnose(sae, args.output, name=name, folder=folder, activations=_activations(args, sae), other=other,
                      other_name=other_name, hungarian=not args.no_hungarian)
    summary = {"alignment": {key: report["alignment"][key] for key in ("raw_mean", "max_abs_deviation_from_one",
                                                                          "bimodality_cosine")},
               "dead": report["dead"], "training_sparsity": report["training_sparsity"],
               "stability": report["stability"]}
    print(json.dumps(summary, indent=2))
    print(f"report: {Path(args.output) / 'diagnostics.json'}; plots: {', '.join(report['plots'])}")
    return 0


def _metadata_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SAE metadata (override or fill what the SAE's cfg.json lacks)")
    group.add_argument("--model-name", help="TransformerLens model name, e.g. pythia-160m-deduped")
    group.add_argument("--hook-name", help="e.g. blocks.8.hook_resid_post")
    group.add_argument("--context-size", type=int, help="tokens per sequence in the eval batches")
    group.add_argument("--prepend-bos", action=argparse.BooleanOptionalAction, default=None)


def add_subcommands(sub: Any) -> None:
    """Add ``eval``, ``publish``, ``pull`` and ``diagnose`` to the ``sae-aligned`` subparsers."""
    from sae_aligned_plugin.saebench.evals import KNOWN_EVALS, OFFLINE_EVALS

    source_help = "a SAELens SAE folder, a dictionary_learning trainSAE folder, or a hub repo id (with --sae-id)"
    offline_help = "YAML config with an 'offline' block (tiny local model + tokens), e.g. " \
                   "configs/offline_tiny_aligned_topk.yaml"

    ev = sub.add_parser("eval", help="run SAEBench evals on an SAE", description=(
        f"Run SAEBench evals and write SAEBench's JSON outputs. Known: {', '.join(KNOWN_EVALS)}. Offline-capable: "
        f"{', '.join(OFFLINE_EVALS)} (core needs --offline-config offline)."))
    ev.add_argument("source", help=source_help)
    ev.add_argument("--sae-id", help="SAE id inside a hub repo / SAELens release; for a local dictionary_learning "
                                     "MetaSAE run, 'meta_sae' evaluates its meta SAE")
    ev.add_argument("--evals", default="core,meta_structure", help="comma-separated eval names")
    ev.add_argument("--output-folder", default="eval_results", help="results go to <folder>/<eval>/")
    ev.add_argument("--offline-config", help=f"core eval on a local model: {offline_help}")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--dtype", default="float32")
    ev.add_argument("--n-batches", type=int, default=20, help="core: reconstruction and sparsity batches each")
    ev.add_argument("--batch-size-prompts", type=int, default=8, help="core: prompts per batch")
    ev.add_argument("--meta-train-steps", type=int, help="meta_structure: training steps (SAEBench default 1500)")
    ev.add_argument("--meta-batch-size", type=int, help="meta_structure: batch size (SAEBench default 1024)")
    ev.add_argument("--llm-batch-size", type=int, help="other evals: SAEBench's llm_batch_size")
    ev.add_argument("--llm-dtype", help="other evals: SAEBench's llm_dtype")
    ev.add_argument("--api-key", help="OpenAI API key for autointerp (or set OPENAI_API_KEY)")
    ev.add_argument("--skip-existing", action="store_true", help="keep existing result files (SAEBench's default)")
    _metadata_flags(ev)
    ev.set_defaults(handler=_user_errors(_eval))

    pub = sub.add_parser("publish", help="upload SAE folders to a Hugging Face repo (SAELens layout + model card)")
    pub.add_argument("folders", nargs="+", metavar="[SAE_ID=]FOLDER", help="SAELens SAE folders (sae_id defaults "
                     "to the folder name); SAELens sub-folders (a MetaSAE's meta SAE) go to SAE_ID/<sub>")
    pub.add_argument("--repo", required=True, help="namespace/name, e.g. alice/aligned-saes")
    pub.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the saved login)")
    pub.add_argument("--private", action="store_true", help="create the repo private")
    pub.add_argument("--revision", default="main", help="branch to commit to (created if missing)")
    pub.add_argument("--message", help="commit message")
    pub.add_argument("--no-card", action="store_true", help="do not write README.md")
    pub.set_defaults(handler=_user_errors(_publish))

    pl = sub.add_parser("pull", help="download one published SAE folder")
    pl.add_argument("repo", help="namespace/name")
    pl.add_argument("sae_id")
    pl.add_argument("--output", default=".", help="the SAE goes to <output>/<sae_id>")
    pl.add_argument("--revision")
    pl.add_argument("--token")
    pl.set_defaults(handler=_user_errors(_pull))

    dg = sub.add_parser("diagnose", help="alignment, dead latents and stability of any SAELens SAE (JSON + PNG)")
    dg.add_argument("source", help=source_help)
    dg.add_argument("--sae-id", help="as for eval")
    dg.add_argument("--output", required=True, help="folder for diagnostics.json and the plots")
    dg.add_argument("--compare", help="a second SAE (same forms as source) for the stability metrics")
    dg.add_argument("--compare-sae-id")
    dg.add_argument("--activations", help="safetensors file with one [N, d_in] tensor, for the dead fraction")
    dg.add_argument("--offline-config", help=f"dead fraction on the tiny offline model: {offline_help}")
    dg.add_argument("--n-rows", type=int, default=64, help="token rows of the offline model to run")
    dg.add_argument("--no-hungarian", action="store_true", help="skip the cubic-time Hungarian matching")
    dg.set_defaults(handler=_user_errors(_diagnose))
