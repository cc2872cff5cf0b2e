#!/usr/bin/env bash
# A few GRPO steps on the GPU path: transformer-engine spec, bf16, NCCL, TP=2,
# rollouts on vLLM colocated in the training processes, 1B preset; prints
# tokens/s, refit seconds and peak memory.  Run wherever 2 GPUs are available
# (e.g. inside the project's image).  --cpu-check runs the same code path on
# the CPU (what `make test` does).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
NPROC=${NPROC:-2}
# Refusals first, in one process: one line and its exit status, not a launcher trace.
"$PY" benchmarks/gpu_rl_smoke.py --preflight "$@"
exec "$PY" -m torch.distributed.run --nproc-per-node "$NPROC" --master-addr 127.0.0.1 \
  --master-port "${MASTER_PORT:-29517}" benchmarks/gpu_rl_smoke.py "$@"
