#!/usr/bin/env python
"""Tokenize jsonl / jsonl.gz / parquet text into Megatron indexed datasets.

Megatron-LM's flags, e.g.::

    python tools/preprocess_data.py --input docs.jsonl --output-prefix out/web \\
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model tok/ --append-eod --workers 2

writes out/web_text_document.{bin,idx,json} and out/web.rejects.jsonl.
Exit status: 0 when at least one document was written, 1 when none was
valid, 2 for bad arguments.  See megatron_dsm/data/preprocess/.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron_dsm.config import add_arguments, from_namespace  # noqa: E402
from megatron_dsm.data.preprocess import PreprocessConfig, format_summary, run  # noqa: E402
from megatron_dsm.data.tokenizer import TokenizerError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, PreprocessConfig, group="preprocess")
    args = parser.parse_args(argv)
    try:
        cfg = from_namespace(PreprocessConfig, args)
        summary = run(cfg)
    except (ValueError, TokenizerError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
