#!/usr/bin/env bash
# The whole test suite (and lint). Extra args go to pytest.
# the tests run the Ray and submitit executors, the ONNX export and the strict docs build for real: their extras
# are installed
export STELAB_EXTRAS="ray,slurm,export,docs" STELAB_MODULES="ray submitit onnx onnxruntime qonnx mkdocs mkdocstrings"
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
ruff check src tests benchmarks scripts
exec python -m pytest -n 2 --dist loadfile "$@"
