"""``sae-aligned``: the plugin's console script. It imports the plugin (registering every architecture)
before handing over to SAELens, which has no entry-point discovery of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import sae_aligned_plugin


def _train(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from sae_aligned_plugin.training import train

    if args.config is not None:
        if rest:
            raise SystemExit(f"unexpected arguments with --config: {' '.join(rest)}")
        overrides = {"output_path": args.output_path} if args.output_path else {}
        sae = train(args.config, **overrides)
    else:  # SAELens's own CLI flags, e.g. --architecture aligned_topk --model_name gpt2 ...
        from sae_lens import LanguageModelSAETrainingRunner
        from sae_lens.llm_sae_training_runner import _parse_cfg_args

        sae = LanguageModelSAETrainingRunner(_parse_cfg_args(list(rest))).run()
    print(f"trained {sae.cfg.architecture()} (d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae})")
    return 0


def _compare(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from sae_aligned_plugin.experiments.compare import main as compare_main

    return compare_main(list(rest))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae-aligned", description=__doc__)
    parser.add_argument("--version", action="version", version=sae_aligned_plugin.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train an SAE with SAELens's runner",
        description="Train from a YAML config (configs/*.yaml), or pass SAELens's own CLI flags after the "
        "command, e.g. `sae-aligned train --architecture aligned_topk --model_name gpt2 ...`. "
        f"Plugin architectures: {', '.join(sae_aligned_plugin.plugin_architectures())}.",
    )
    train.add_argument("--config", help="YAML config in SAELens's LanguageModelSAERunnerConfig layout")
    train.add_argument("--output-path", help="override output_path of the config")
    train.set_defaults(handler=_train)
    compare = sub.add_parser("compare", help="the offline comparison of baseline vs plugin SAEs (main job)",
                             add_help=False)
    compare.set_defaults(handler=_compare)
    from sae_aligned_plugin.commands import add_subcommands  # eval, publish, pull, diagnose

    add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    return int(args.handler(args, rest))


if __name__ == "__main__":
    sys.exit(main())
