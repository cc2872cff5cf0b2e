#!/usr/bin/env python
"""Evaluate a model (or existing generations) on the paper's benchmarks.

    python tools/evaluate.py --benchmarks gsm8k math500 --backend hf --model PATH \
        --style instruct --n-samples 1 --output runs/eval/gen.jsonl

One record per problem is appended to ``--output`` as soon as it is graded,
so an interrupted run resumes where it stopped (problems already in the file
are skipped).  Metrics (JSON), a printed table and, with several samples per
problem, the maj@k / pass@k plot are written at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_dsm.config import add_arguments, from_namespace, load_yaml  # noqa: E402
from megatron_dsm.data.tokenizer import TokenizerError  # noqa: E402
from megatron_dsm.eval.benchmarks import BenchmarkError  # noqa: E402
from megatron_dsm.eval.runner import EvalConfig, run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file with these options (section 'evaluate')")
    add_arguments(ap, EvalConfig)
    ns = ap.parse_args(argv)
    base = load_yaml(ns.config, "evaluate") if ns.config else {}
    try:
        cfg = from_namespace(EvalConfig, ns, base)
    except ValueError as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    # the megatron back end's module loads torch: imported once the options are valid
    from megatron_dsm.eval.megatron_backend import BackendError
    try:
        run(cfg)
    except (BenchmarkError, FileNotFoundError, BackendError, TokenizerError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
