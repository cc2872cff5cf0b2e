#!/usr/bin/env bash
# The paper's Figure 5 on the toy task: RFT, Online RFT, GRPO+OS and GRPO+PS
# from the same SFT policy with equal budgets (same steps, questions per
# step, samples per question, response length and learning rate).
# Prints the final greedy held-out accuracy of each method.
#
#   bash examples/grpo_ablation.sh                  # WORKDIR=runs/grpo_ablation, STEPS=60
#   STEPS=100 WORKDIR=/tmp/abl bash examples/grpo_ablation.sh
#
# The SFT policy is built once in WORKDIR/sft (examples/grpo_demo.py) and reused;
# extra arguments pass through to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORKDIR=${WORKDIR:-runs/grpo_ablation}
STEPS=${STEPS:-60}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
mkdir -p "$WORKDIR"

run() {  # tag, then RL flags
  local tag=$1; shift
  "$PY" examples/grpo_demo.py --workdir "$WORKDIR" --tag "$tag" --train-iters "$STEPS" \
    --rl-eval-interval "$STEPS" "$@" "${EXTRA[@]}" > "$WORKDIR/$tag.log" 2>&1 \
    || { echo "error: $tag failed, see $WORKDIR/$tag.log" >&2; tail -5 "$WORKDIR/$tag.log" >&2; exit 1; }
  tail -n 1 "$WORKDIR/$tag.log" | sed "s/^/$tag: /"
}
EXTRA=("$@")
run rft        --algorithm rft
run online_rft --algorithm online-rft
run grpo_os    --algorithm grpo --supervision outcome --reward rule
run grpo_ps    --algorithm grpo --supervision process --reward arith-steps

echo "final held-out accuracy (greedy, $STEPS steps each):"
for tag in rft online_rft grpo_os grpo_ps; do
  after=$(tail -n 1 "$WORKDIR/$tag.log" | sed -n 's/.*after=\([0-9.]*\).*/\1/p')
  before=$(tail -n 1 "$WORKDIR/$tag.log" | sed -n 's/.*before=\([0-9.]*\).*/\1/p')
  printf '  %-11s %s  (SFT start %s)\n' "$tag" "$after" "$before"
done
