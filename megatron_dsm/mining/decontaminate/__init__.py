"""Benchmark decontamination: the DeepSeekMath rule, fast enough for a crawl.

The rule (DeepSeekMath, section 2.1): any text segment that contains a
10-gram occurring in a benchmark question or answer is removed; benchmark
texts shorter than 10 grams but with at least 3 are matched exactly.

How this package reads that rule, one module per part:

* ``normalise`` - grams are normalised tokens (case and Unicode folding,
  punctuation as separators, LaTeX typesetting blanked, numbers kept, one
  token per character in scripts written without spaces), hashed in numpy;
* ``benchmarks`` - which fields of which benchmark items are indexed;
* ``index`` - the stage's options and the sorted hashes of every benchmark
  n-gram and short text (3 to 9 tokens; shorter ones are not matched);
* ``clean`` - segments (lines, or paragraphs) touched by a verified n-gram
  match, or equal to a short text, are cut out of each document;
* ``report`` - hits per benchmark item and per document;
* ``records`` - the jsonl shapes cleaned by tools/decontaminate.py;
* ``datatrove_step`` - the stage as a datatrove pipeline step.
"""

from megatron_dsm.mining.decontaminate.benchmarks import (
    BENCHMARK_LAYOUT,
    BenchmarkText,
    load_benchmarks,
)
from megatron_dsm.mining.decontaminate.clean import (
    CleanResult,
    Decontaminator,
    Hit,
    merge_results,
)
from megatron_dsm.mining.decontaminate.datatrove_step import BenchmarkDecontamination
from megatron_dsm.mining.decontaminate.index import BenchmarkIndex, DecontConfig
from megatron_dsm.mining.decontaminate.normalise import (
    Scan,
    ngram_hashes,
    normalize,
    scan,
    window_hashes,
)
from megatron_dsm.mining.decontaminate.records import open_text, record_texts, set_record_text
from megatron_dsm.mining.decontaminate.report import DecontReport

__all__ = [
    "BENCHMARK_LAYOUT", "BenchmarkDecontamination", "BenchmarkIndex", "BenchmarkText",
    "CleanResult", "DecontConfig", "DecontReport", "Decontaminator", "Hit", "Scan",
    "load_benchmarks", "merge_results", "ngram_hashes", "normalize", "open_text",
    "record_texts", "scan", "set_record_text", "window_hashes",
]
