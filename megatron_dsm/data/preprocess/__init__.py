"""jsonl / jsonl.gz / parquet text -> Megatron indexed datasets.

The command line is Megatron-LM's ``tools/preprocess_data.py`` (same flags,
same output names ``{prefix}_{key}_document.bin/.idx`` or ``_sentence``, same
token ids: text_to_ids without special tokens, empty sentences dropped, EOD
appended to the last sentence with ``--append-eod``, dtype by vocab size).
Where it differs, it differs on purpose:

* Speed: instead of one Python process per worker each calling the tokenizer
  once per document, documents are parsed with orjson and tokenized in large
  batches by the tokenizer's own thread pool (Rust ``encode_batch`` for
  tokenizers, ``num_threads`` for SentencePiece) while the next batch is
  parsed; ids become numpy arrays and are written batch-wise.
* Determinism: ``--partitions`` cuts the input into contiguous byte ranges (not
  round-robin lines), every partition is written in input order and the
  shards are concatenated in order, so the bytes do not depend on
  ``--workers`` or ``--partitions``.
* Bad input (malformed JSON, a missing key, non-UTF-8 bytes, empty text, a
  document over ``--max-document-bytes``) is counted and written to
  ``{prefix}.rejects.jsonl`` (file, line, reason) instead of crashing; the run
  fails only when not one document is valid.
* Crash safety: outputs are written under temporary names and renamed when
  complete (see ``data/indexed.py``); a ``PREFIX.json`` sidecar records the
  tokenizer fingerprint, counts and source files.
* Sentence splitting uses nltk Punkt without downloading anything (see
  ``sentences``).

The parts: ``config`` (the options), ``inputs`` (files, partitions,
records), ``sentences`` (Punkt), ``encode`` (one partition tokenized into
datasets), ``runner`` (the whole tool and its summary).
"""


from megatron_dsm.data.preprocess.config import DEFAULT_MAX_DOCUMENT_BYTES, PreprocessConfig
from megatron_dsm.data.preprocess.encode import process_partition
from megatron_dsm.data.preprocess.inputs import (
    INPUT_SUFFIXES,
    Unit,
    discover_inputs,
    iter_records,
    plan_partitions,
)
from megatron_dsm.data.preprocess.runner import format_summary, run
from megatron_dsm.data.preprocess.sentences import (
    SentenceSplitter,
    load_punkt,
    local_punkt,
    save_punkt,
    train_punkt,
)

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES", "INPUT_SUFFIXES", "PreprocessConfig", "SentenceSplitter", "Unit",
    "discover_inputs", "format_summary", "iter_records", "load_punkt", "local_punkt",
    "plan_partitions", "process_partition", "run", "save_punkt", "train_punkt",
]
