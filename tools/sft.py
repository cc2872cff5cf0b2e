#!/usr/bin/env python
"""Supervised fine-tuning (DeepSeekMath-Instruct).  Megatron-LM flags plus the
SFT options of megatron_dsm.training.sft.SFTConfig; launch with torchrun (see
examples/sft_dsm.sh).

    python tools/sft.py --data-path out/sft --load base_ckpt --finetune \\
        --lr 5e-5 --lr-decay-style constant --train-iters 500 --global-batch-size 256

`--data-path` is a packed prefix written by tools/build_sft_data.py.  Exit
status 2 with one line on stderr for bad options, data or checkpoints.

`--dry-run`: print tools/plan.py's layout and memory report for these
arguments (cluster from NNODES and NPROC) and exit without building anything.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from megatron_dsm.planner.cli import dry_run  # noqa: E402
from megatron_dsm.training.sft import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(dry_run("sft") if "--dry-run" in sys.argv else main())
