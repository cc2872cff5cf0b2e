#!/usr/bin/env python
"""Train an outcome or process reward model (GPTModel backbone + value head).

    python tools/train_reward_model.py --rm-type outcome --train-data orm.jsonl \\
        --valid-data orm_valid.jsonl --load sft_ckpt --save rm_ckpt --tokenizer-model tok.json

Outcome records: {question, solution, label} or {question, solution, answer}
(graded).  Process records: {question, steps, step_labels} or {question,
solution, step_labels} (tools/build_prm_data.py writes these).  `--load` is
any checkpoint of the training loop: a language model initialises the
backbone, a reward model resumes (or, with --finetune, gives its weights).
Megatron-LM flags for batches, LR and parallelism; exit status 2 with one line
on stderr for bad options or data.

`--dry-run`: print tools/plan.py's layout and memory report for these
arguments (cluster from NNODES and NPROC) and exit without building anything.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from megatron_dsm.planner.cli import dry_run  # noqa: E402
from megatron_dsm.rl.reward_models import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(dry_run("rm") if "--dry-run" in sys.argv else main())
