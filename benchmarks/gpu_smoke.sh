#!/usr/bin/env bash
# Transformer-engine spec, bf16, one GPU, ~1B Llama config: tokens/s and MFU.
# Run wherever a GPU is available (e.g. inside the project's NGC image).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
# One GPU, one process: no torchrun (platform.py sets up a world of one
# itself), so a refusal is one line and its exit status, not a launcher trace.
exec "$PY" benchmarks/gpu_smoke.py "$@"
