#!/usr/bin/env python
"""Run a whole-path recipe (mining -> decontamination -> indexed datasets ->
pretraining -> SFT -> reward model -> RL -> evaluation): its stages in order,
locally or as a Slurm job chain; the plan with --dry-run; `status`.
See megatron_dsm/recipe/cli.py (`--help`)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from megatron_dsm.recipe.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
