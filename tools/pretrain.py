#!/usr/bin/env python
"""Continued pretraining (Megatron-LM flags). Launch with torchrun; see
examples/pretrain_dsm.sh.  `--help` lists every option."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from megatron_dsm.training.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
