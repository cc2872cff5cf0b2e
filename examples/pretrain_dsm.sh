#!/usr/bin/env bash
# Continued pretraining with torchrun (DESIGN.md contract).
#
#   bash examples/pretrain_dsm.sh                     # tiny model, demo corpus, CPU, minutes
#   TP=2 NPROC=2 bash examples/pretrain_dsm.sh        # tensor parallel on 2 CPU processes
#   CONFIG=examples/configs/deepseekmath_base_7b.yaml NPROC=8 NNODES=64 ... bash examples/pretrain_dsm.sh
#
# Environment: NPROC (processes per node), TP, PP, NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT, TRAIN_ITERS, SAVE_DIR, DATA_PATH ("w1 p1 w2 p2"
# or one prefix), MIXTURE (a mixture YAML instead of DATA_PATH), CONFIG (a
# recipe YAML); any extra arguments pass through to tools/pretrain.py.
# A SAVE_DIR that already holds a checkpoint is resumed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
NPROC=${NPROC:-1}
TP=${TP:-1}
PP=${PP:-1}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-$((29500 + RANDOM % 1000))}
SAVE_DIR=${SAVE_DIR:-runs/pretrain_tiny}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

args=()
if [ -n "${CONFIG:-}" ]; then
  args+=(--config "$CONFIG")
fi
if [ -n "${MIXTURE:-}" ]; then
  args+=(--mixture "$MIXTURE")
elif [ -n "${DATA_PATH:-}" ]; then
  args+=(--data-path "$DATA_PATH")
elif [ -z "${CONFIG:-}" ]; then
  # Nothing given: the demo corpus, built offline by the project's own tools
  # (tokenizer trained on vendored GSM8K/MATH text, tools/preprocess_data.py).
  DEMO_DIR=${DEMO_DIR:-runs/demo_corpus}
  bash examples/build_demo_corpus.sh "$DEMO_DIR" >&2
  args+=(--mixture "$DEMO_DIR/mixture.yaml" --lr 3e-3 --lr-warmup-iters 10 --lr-decay-style cosine
         --min-lr 3e-4 --micro-batch-size 4 --global-batch-size 16 --log-interval 5
         --eval-interval 100 --eval-iters 2)
fi
args+=(--tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
       --save "$SAVE_DIR" --save-interval "${SAVE_INTERVAL:-100}")
if [ -z "${CONFIG:-}" ] || [ -n "${TRAIN_ITERS:-}" ]; then
  args+=(--train-iters "${TRAIN_ITERS:-200}")
fi
if [ -f "$SAVE_DIR/latest_checkpointed_iteration.txt" ]; then
  args+=(--load "$SAVE_DIR")
fi

exec "$PY" -m torch.distributed.run \
  --nproc-per-node "$NPROC" --nnodes "$NNODES" --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
  tools/pretrain.py "${args[@]}" "$@"
