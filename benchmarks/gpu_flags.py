"""The command-line flags the GPU check scripts share (gpu_smoke.py,
gpu_path_check.py, gpu_rl_smoke.py): the model preset and shape, and how a
host without a GPU or transformer-engine is treated."""

from __future__ import annotations

import argparse


def add_model_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="llama-1b", help="model preset (default: llama-1b)")
    ap.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocab size")
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--micro-batch-size", type=int, default=8)


def add_host_flags(ap: argparse.ArgumentParser, *, preflight: str | None = None) -> None:
    """--allow-local-spec and --cpu-check; --preflight when ``preflight``
    (its help) is given."""
    ap.add_argument("--allow-local-spec", action="store_true",
                    help="on a GPU without transformer-engine, use the local spec instead of failing")
    ap.add_argument("--cpu-check", action="store_true",
                    help="no GPU: run this script's code path on the CPU (checks the script, not the GPU)")
    if preflight:
        ap.add_argument("--preflight", action="store_true", help=preflight)
