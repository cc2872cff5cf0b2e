# Sourced by examples/{pretrain,sft,grpo}_dsm.sh: the environment contract of
# DESIGN.md in one place.  Reads NPROC, TP, PP, NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT, TRAIN_ITERS, SAVE_DIR (default: $1), CONFIG;
# fills the array `args` with the flags they imply; `launch TOOL EXTRA...`
# runs TOOL under torchrun with `args` and the extra arguments.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
NPROC=${NPROC:-1}
TP=${TP:-1}
PP=${PP:-1}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-$((29500 + RANDOM % 1000))}
SAVE_DIR=${SAVE_DIR:-$1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

args=()
if [ -n "${CONFIG:-}" ]; then
  args+=(--config "$CONFIG")
fi

# Parallel layout, checkpoints (save interval default $2, else 100), and the
# default iteration count ($1) unless a recipe sets it; a SAVE_DIR holding a checkpoint is
# resumed, else LOAD (when given) starts a fine-tune from it.
finish_args() {
  args+=(--tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
         --save "$SAVE_DIR" --save-interval "${SAVE_INTERVAL:-${2:-100}}")
  if [ -z "${CONFIG:-}" ] || [ -n "${TRAIN_ITERS:-}" ]; then
    args+=(--train-iters "${TRAIN_ITERS:-$1}")
  fi
  if [ -f "$SAVE_DIR/latest_checkpointed_iteration.txt" ]; then
    args+=(--load "$SAVE_DIR")
  elif [ -n "${LOAD:-}" ]; then
    args+=(--load "$LOAD" --finetune)
  fi
}

launch() {
  local tool=$1
  shift
  exec "$PY" -m torch.distributed.run \
    --nproc-per-node "$NPROC" --nnodes "$NNODES" --node-rank "$NODE_RANK" \
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
    "$tool" "${args[@]}" "$@"
}
