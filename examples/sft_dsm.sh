#!/usr/bin/env bash
# Supervised fine-tuning (DeepSeekMath-Instruct) with torchrun (DESIGN.md contract).
#
#   bash examples/sft_dsm.sh                          # tiny model, GSM8K train SFT data, CPU, minutes
#   TP=2 NPROC=2 bash examples/sft_dsm.sh             # tensor parallel on 2 CPU processes
#   CONFIG=examples/configs/deepseekmath_instruct_7b.yaml DATA_PATH=/data/sft_776k \
#     LOAD=/ckpt/dsm-base NPROC=8 NNODES=4 ... bash examples/sft_dsm.sh
#
# Environment: NPROC (processes per node), TP, PP, NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT, TRAIN_ITERS, SAVE_DIR, DATA_PATH (a packed SFT
# prefix from tools/build_sft_data.py), CONFIG (a recipe YAML), LOAD (the
# pretrained checkpoint, loaded with --finetune: weights only).  Extra
# arguments pass through to tools/sft.py.  With nothing set, SFT data is
# built from GSM8K train (examples/data/gsm8k/train.jsonl, else
# ../shared/data/train/gsm8k/train.jsonl) with the demo tokenizer into
# SFT_DATA_DIR (default runs/sft_data), and the tiny model is fine-tuned from
# PRETRAIN_DIR (default runs/pretrain_tiny) when that checkpoint exists (else
# from its initialisation).  A SAVE_DIR that already holds a checkpoint is
# resumed instead.
# TP and PP override a recipe's (CONFIG) layout only when set.  DRY_RUN=1
# prints the torchrun command and the planner's report (tools/plan.py) for
# the parsed arguments on NNODES x NPROC GPUs instead of training.
set -euo pipefail
source "$(dirname "$0")/launch_common.sh" runs/sft_tiny

if [ -n "${DATA_PATH:-}" ]; then
  args+=(--data-path "$DATA_PATH")
elif [ -z "${CONFIG:-}" ]; then
  # Nothing given: SFT data from GSM8K train, tokenised with the demo tokenizer.
  DEMO_DIR=${DEMO_DIR:-runs/demo_corpus}
  SEQ=${SEQ_LENGTH:-512}
  GSM8K=examples/data/gsm8k/train.jsonl
  [ -f "$GSM8K" ] || GSM8K=../shared/data/train/gsm8k/train.jsonl
  [ -f "$GSM8K" ] || { echo "error: no GSM8K train split (examples/data/gsm8k or ../shared/data/train/gsm8k)" >&2; exit 2; }
  prepare bash examples/build_demo_corpus.sh "$DEMO_DIR" >&2
  SFT_PREFIX=${SFT_DATA_DIR:-runs/sft_data}/gsm8k_sft_$SEQ
  if [ ! -f "$SFT_PREFIX.json" ]; then
    prepare "$PY" tools/build_sft_data.py --input "$GSM8K" --format gsm8k --output-prefix "$SFT_PREFIX" \
      --tokenizer-model "$DEMO_DIR/tokenizer" --seq-length "$SEQ" >&2
  fi
  args+=(--data-path "$SFT_PREFIX" --seq-length "$SEQ" --lr 1e-3 --lr-decay-style constant
         --micro-batch-size 4 --global-batch-size 8 --log-interval 5 --weight-decay 0.0)
  PRETRAIN_DIR=${PRETRAIN_DIR:-runs/pretrain_tiny}
  if [ -z "${LOAD:-}" ] && [ -f "$PRETRAIN_DIR/latest_checkpointed_iteration.txt" ]; then
    LOAD=$PRETRAIN_DIR
  fi
fi
finish_args 100
launch tools/sft.py "$@"
