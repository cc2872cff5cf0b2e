#!/usr/bin/env bash
# The GPU path, in two parts (each given the flags it knows; default: both):
#   throughput  TE spec, bf16, one GPU, ~1B Llama config: tokens/s and MFU
#               (benchmarks/gpu_smoke.py);
#   tp2         the 1B preset with the TE spec, bf16, NCCL, TP=2 on 2 GPUs: a
#               pretraining step, a save and a load, and a mixed-length
#               generation batch compared row by row with single-row
#               generation (benchmarks/gpu_path_check.py).
# Run wherever a GPU is available (e.g. inside the project's NGC image);
# --cpu-check runs the same code paths on the CPU (what `make test` does).
#   bash benchmarks/gpu_smoke.sh [throughput|tp2] [flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
parts="throughput tp2"
case "${1:-}" in
    throughput|tp2) parts=$1; shift ;;
esac
for part in $parts; do
    case $part in
        # one process: no torchrun (platform.py sets up a world of one itself),
        # so a refusal is one line and its exit status, not a launcher trace
        throughput) "$PY" benchmarks/gpu_smoke.py "$@" ;;
        # the host is checked in a plain process first, for the same reason
        tp2) "$PY" benchmarks/gpu_path_check.py --preflight "$@"
             "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
                 benchmarks/gpu_path_check.py "$@" ;;
    esac
done
