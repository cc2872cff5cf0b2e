#!/usr/bin/env python
"""Build packed SFT data: jsonl conversations / pairs -> PREFIX.tokens and
PREFIX.loss_mask (Megatron MMIDIDX .bin/.idx) + PREFIX.json.

    python tools/build_sft_data.py --input train.jsonl --output-prefix out/sft \\
        --tokenizer-model tok/tokenizer.json --seq-length 4096

GSM8K train ({question, answer} with '#### N'): --format gsm8k.
MATH train ({problem, solution}): --question-key problem --response-key solution.
Exit status: 0 on success, 2 for bad arguments or bad input (one line on stderr
saying which file and line).  See megatron_dsm/data/sft.py for the template,
masking, truncation and storage layout.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron_dsm.config import ConfigError, add_arguments, from_namespace  # noqa: E402
from megatron_dsm.data.sft import SFTDataConfig, SFTDataError, build_sft_data  # noqa: E402
from megatron_dsm.data.tokenizer import TokenizerError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, SFTDataConfig, group="sft data")
    args = parser.parse_args(argv)
    try:
        cfg = from_namespace(SFTDataConfig, args)
        info = build_sft_data(cfg)
    except (ConfigError, SFTDataError, TokenizerError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    st = info.get("stats", {})
    print(f"examples {st.get('examples', 0)} | samples {info['samples']} | packs {info['packs']} | "
          f"tokens {info['tokens']} | target tokens {info['target_tokens']} | "
          f"packing efficiency {info['packing_efficiency']:.3f} | "
          f"dropped too long {st.get('dropped_too_long', 0)} | truncated {st.get('truncated', 0)} | "
          f"dropped no target {st.get('dropped_no_target', 0)} -> {cfg.output_prefix}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
