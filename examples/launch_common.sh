# Sourced by examples/{pretrain,sft,grpo}_dsm.sh: the environment contract of
# DESIGN.md in one place.  Reads NPROC, TP, PP, NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT, TRAIN_ITERS, SAVE_DIR (default: $1), CONFIG,
# DRY_RUN; fills the array `args` with the flags they imply; `launch TOOL
# EXTRA...` runs TOOL under torchrun with `args` and the extra arguments.
# TP and PP become flags only when set: the command line beats the YAML, so
# a default here would override a recipe's layout.
# DRY_RUN=1: print the torchrun command, then run TOOL --dry-run once (the
# planner's report for the parsed arguments on NNODES x NPROC GPUs) instead
# of training; data preparation steps are skipped.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
NPROC=${NPROC:-1}
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

# Parallel layout (TP, PP when set), checkpoints, and the save interval
# (SAVE_INTERVAL, else $2, else 100) and iteration count (TRAIN_ITERS, else
# $1) unless a recipe sets them; a SAVE_DIR holding a checkpoint is resumed,
# else LOAD (when given) starts a fine-tune from it.
finish_args() {
  if [ -n "${TP:-}" ]; then args+=(--tensor-model-parallel-size "$TP"); fi
  if [ -n "${PP:-}" ]; then args+=(--pipeline-model-parallel-size "$PP"); fi
  args+=(--save "$SAVE_DIR")
  if [ -z "${CONFIG:-}" ] || [ -n "${SAVE_INTERVAL:-}" ]; then
    args+=(--save-interval "${SAVE_INTERVAL:-${2:-100}}")
  fi
  if [ -z "${CONFIG:-}" ] || [ -n "${TRAIN_ITERS:-}" ]; then
    args+=(--train-iters "${TRAIN_ITERS:-$1}")
  fi
  if [ -f "$SAVE_DIR/latest_checkpointed_iteration.txt" ]; then
    args+=(--load "$SAVE_DIR")
  elif [ -n "${LOAD:-}" ]; then
    args+=(--load "$LOAD" --finetune)
  fi
}

# Data preparation of the demo branches: skipped by a dry run.
prepare() {
  if [ -n "${DRY_RUN:-}" ]; then echo "dry run: skip $*" >&2; else "$@"; fi
}

launch() {
  local tool=$1
  shift
  local cmd=("$PY" -m torch.distributed.run
    --nproc-per-node "$NPROC" --nnodes "$NNODES" --node-rank "$NODE_RANK"
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"
    "$tool" "${args[@]}" "$@")
  if [ -n "${DRY_RUN:-}" ]; then
    echo "launch: ${cmd[*]}"
    NNODES=$NNODES NPROC=$NPROC exec "$PY" "$tool" "${args[@]}" "$@" --dry-run
  fi
  exec "${cmd[@]}"
}
