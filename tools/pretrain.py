#!/usr/bin/env python
"""Continued pretraining (Megatron-LM flags). Launch with torchrun; see
examples/pretrain_dsm.sh.  `--help` lists every option.

`--dry-run`: print tools/plan.py's layout and memory report for these
arguments (cluster from NNODES and NPROC) and exit without building anything.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from megatron_dsm.planner.cli import dry_run  # noqa: E402
from megatron_dsm.training.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(dry_run("pretrain") if "--dry-run" in sys.argv else main())
