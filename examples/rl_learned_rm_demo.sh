#!/usr/bin/env bash
# GRPO scored by learned reward models, on CPU, from nothing downloaded
# (examples/rl_learned_rm_demo.py): the toy arithmetic task's SFT policy
# (examples/grpo_demo.py) -> Math-Shepherd PRM data and graded ORM data from
# the policy's own samples (tools/build_prm_data.py) -> ORM and PRM trained
# with their own recipe (examples/configs/toy_rm.yaml) -> GRPO+OS scored by
# the ORM and GRPO+PS scored by the PRM from the same SFT policy, equal
# budgets -> one round of iterative RL (the ORM retrained on the policy's
# samples with 10% replay, reference reset) -> a table, a PNG of held-out
# accuracy against steps (WORKDIR/heldout_accuracy.png).
# Last two lines: "prm step auc=... position_baseline=..." and
# "heldout accuracy sft=... grpo_os_orm=... grpo_ps_prm=... iterative=...".
#
#   bash examples/rl_learned_rm_demo.sh                  # WORKDIR=runs/rl_learned_rm_demo, fresh
#   REUSE=1 bash examples/rl_learned_rm_demo.sh          # keep WORKDIR's SFT policy, RM data and RMs
#   bash examples/rl_learned_rm_demo.sh --rl-steps 120   # any demo, training or RL flag
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORKDIR=${WORKDIR:-runs/rl_learned_rm_demo}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
if [ "${REUSE:-0}" != 1 ]; then
  rm -rf "$WORKDIR"
fi
exec "$PY" examples/rl_learned_rm_demo.py --workdir "$WORKDIR" "$@"
