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
# A SAVE_DIR that already holds a checkpoint is resumed; else LOAD (a checkpoint
# of another recipe) is loaded with --finetune.
# TP and PP override a recipe's (CONFIG) layout only when set.  DRY_RUN=1
# prints the torchrun command and the planner's report (tools/plan.py) for
# the parsed arguments on NNODES x NPROC GPUs instead of training.
set -euo pipefail
source "$(dirname "$0")/launch_common.sh" runs/pretrain_tiny

if [ -n "${MIXTURE:-}" ]; then
  args+=(--mixture "$MIXTURE")
elif [ -n "${DATA_PATH:-}" ]; then
  args+=(--data-path "$DATA_PATH")
elif [ -z "${CONFIG:-}" ]; then
  # Nothing given: the demo corpus, built offline by the project's own tools
  # (tokenizer trained on vendored GSM8K/MATH text, tools/preprocess_data.py).
  DEMO_DIR=${DEMO_DIR:-runs/demo_corpus}
  prepare bash examples/build_demo_corpus.sh "$DEMO_DIR" >&2
  args+=(--mixture "$DEMO_DIR/mixture.yaml" --lr 3e-3 --lr-warmup-iters 10 --lr-decay-style cosine
         --min-lr 3e-4 --micro-batch-size 4 --global-batch-size 16 --log-interval 5
         --eval-interval 100 --eval-iters 2)
fi
finish_args 200
launch tools/pretrain.py "$@"
