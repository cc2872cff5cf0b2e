#!/usr/bin/env python
"""GRPO / RFT / Online RFT / PPO (Megatron-LM flags + RL flags). Launch with
torchrun; see examples/grpo_dsm.sh.  `--help` lists every option.

`--dry-run`: print tools/plan.py's layout and memory report for these
arguments (cluster from NNODES and NPROC) and exit without building anything.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from megatron_dsm.planner.cli import dry_run  # noqa: E402
from megatron_dsm.rl.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(dry_run("rl") if "--dry-run" in sys.argv else main())
