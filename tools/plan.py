#!/usr/bin/env python
"""Layout and memory planner: checks a stage's layout rules and estimates
memory per GPU, and names the first layout that fits when the given one does not.

    python tools/plan.py --config examples/configs/deepseekmath_base_7b.yaml --nodes 64
    python tools/plan.py --config examples/configs/deepseekmath_rl_7b.yaml --nodes 16 \\
        --gpus-per-node 8 --gpu-memory 80 --tensor-model-parallel-size 8

Flags other than the planner's are the stage tool's own.  Exit status 0: fits;
1: does not fit (the first layout that does is named); 2: bad input (one
`error:` line).  The stage tools take `--dry-run` for the same report.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from megatron_dsm.planner.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
