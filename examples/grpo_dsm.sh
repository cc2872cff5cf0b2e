#!/usr/bin/env bash
# GRPO with torchrun (DESIGN.md contract; same variables as pretrain_dsm.sh).
#
#   bash examples/grpo_dsm.sh                      # tiny policy, generated arithmetic task, CPU
#   TP=2 NPROC=2 bash examples/grpo_dsm.sh         # tensor parallel on 2 CPU processes
#   CONFIG=examples/configs/deepseekmath_rl_7b.yaml DATA_PATH=/data/gsm8k_math_cot_144k.jsonl \
#     LOAD=/ckpt/dsm-instruct-7b NPROC=8 NNODES=8 ... bash examples/grpo_dsm.sh
#
# Environment: NPROC (processes per node), TP, PP (in-process rollouts need
# PP=1), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, TRAIN_ITERS, SAVE_DIR,
# DATA_PATH (a jsonl of {question, answer}; default: the generated arithmetic
# task), CONFIG (a recipe YAML), LOAD (initial policy, read with --finetune);
# any extra arguments pass through to tools/grpo.py.  A SAVE_DIR that already
# holds a checkpoint is resumed (policy, optimizer, RL iteration, data position,
# reference model).
# TP and PP override a recipe's (CONFIG) layout only when set.  DRY_RUN=1
# prints the torchrun command and the planner's report (tools/plan.py) for
# the parsed arguments on NNODES x NPROC GPUs instead of training.
set -euo pipefail
source "$(dirname "$0")/launch_common.sh" runs/grpo_tiny

if [ -n "${DATA_PATH:-}" ]; then
  args+=(--task "$DATA_PATH")
elif [ -z "${CONFIG:-}" ]; then
  # Nothing given: a tiny byte-level policy on the generated arithmetic task
  # (examples/grpo_demo.sh first SFTs one; pass LOAD=runs/grpo_demo/sft to start from it).
  args+=(--num-layers 2 --hidden-size 128 --num-attention-heads 4 --ffn-hidden-size 256
         --seq-length 160 --vocab-size 259 --lr 3e-4 --lr-decay-style constant --weight-decay 0
         --micro-batch-size 32 --global-batch-size 64 --prompts-per-step 8 --group-size 8
         --max-new-tokens 40 --log-interval 1 --rl-iteration-steps 10)
fi
finish_args 20 10
launch tools/grpo.py "$@"
