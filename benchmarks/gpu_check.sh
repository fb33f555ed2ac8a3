#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and this repo's venv:
#   benchmarks/gpu_check.sh             checks CUDA really runs, fp32/fp16 accuracy, prints
#                                       images/s (b0/b4/b7, batch 1/8/32/64, fp32/fp16, I/O
#                                       binding) and the service's images/s at concurrency 64
#   benchmarks/gpu_check.sh --dry-run   the same logic on the CPU provider, tiny sizes; its
#                                       figures are CPU figures and labelled so
# Exit codes: 0 all checks passed; 2 CUDA is not really in use; 1 another check failed.
# Models are exported into artifacts/bench-models (b7 takes a minute or two the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [[ " $* " != *" --dry-run "* ]]; then
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
        echo "FAIL: no NVIDIA GPU visible (nvidia-smi); use --dry-run to exercise the logic on CPU" >&2
        exit 2
    fi
fi
exec "$PYTHON" -m benchmarks.gpu_check "$@"
