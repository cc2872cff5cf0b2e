#!/usr/bin/env python
"""Train a tokenizer offline from jsonl text.

    python tools/train_tokenizer.py --input a.jsonl b.jsonl --json-keys text \\
        --type bytelevel-bpe --vocab-size 4096 --output tok/

Types: ``bytelevel-bpe`` (Hugging Face ``tokenizers``: GPT-2 style byte-level
BPE, lossless, writes tokenizer.json + tokenizer_config.json),
``sentencepiece-bpe`` and ``sentencepiece-unigram`` (writes tokenizer.model,
byte fallback on so no text is lost to <unk>).  Special tokens: an end of
document token (``<|endoftext|>`` / ``</s>``), bos and pad.  The folder is
written under a temporary name and renamed when complete; load it with
megatron_dsm.data.tokenizer.build_tokenizer("auto", OUTPUT).
"""

import argparse
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron_dsm.io import replace_dir  # noqa: E402

TYPES = ("bytelevel-bpe", "sentencepiece-bpe", "sentencepiece-unigram")
BYTELEVEL_SPECIALS = {"eos_token": "<|endoftext|>", "bos_token": "<|startoftext|>", "pad_token": "<|padding|>"}


def iter_texts(paths: list[str], keys: list[str], max_chars: int | None):
    """Text of every key of every valid record; bad lines are skipped."""
    seen = 0
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    continue
                if not isinstance(rec, dict):
                    continue
                for k in keys:
                    v = rec.get(k)
                    if isinstance(v, str) and v:
                        yield v
                        seen += len(v)
                        if max_chars and seen >= max_chars:
                            return


def train_bytelevel(texts, vocab_size: int, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BYTELEVEL_SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    config = {**BYTELEVEL_SPECIALS, "model_max_length": 4096, "tokenizer_class": "PreTrainedTokenizerFast",
              "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")


def train_sentencepiece(texts, vocab_size: int, model_type: str, out: Path) -> None:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(out / "tokenizer"), vocab_size=vocab_size,
        model_type=model_type, byte_fallback=True, character_coverage=0.9995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, split_digits=True, max_sentence_length=1 << 16,
        num_threads=os.cpu_count() or 1, minloglevel=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", required=True, help="jsonl / jsonl.gz files")
    ap.add_argument("--json-keys", nargs="+", default=["text"])
    ap.add_argument("--type", choices=TYPES, default="bytelevel-bpe")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--max-chars", type=int, default=200_000_000, help="stop reading after this many characters")
    ap.add_argument("--output", required=True, help="output folder")
    args = ap.parse_args(argv)
    for p in args.input:
        if not os.path.isfile(p):
            print(f"error: --input {p}: file not found", file=sys.stderr)
            return 2
    min_vocab = 300 if args.type == "bytelevel-bpe" else 300
    if args.vocab_size < min_vocab:
        print(f"error: --vocab-size {args.vocab_size} is below {min_vocab} (bytes + specials need room)",
              file=sys.stderr)
        return 2
    if not any(True for _ in iter_texts(args.input, args.json_keys, 1)):
        print(f"error: no text under keys {args.json_keys} in {args.input}", file=sys.stderr)
        return 2
    out = Path(args.output)
    tmp = Path(f"{out}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        texts = iter_texts(args.input, args.json_keys, args.max_chars)
        if args.type == "bytelevel-bpe":
            train_bytelevel(texts, args.vocab_size, tmp)
        else:
            train_sentencepiece(texts, args.vocab_size, args.type.split("-")[1], tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from megatron_dsm.data.tokenizer import build_tokenizer

    tok = build_tokenizer("auto", out)
    print(f"wrote {out}: {tok.kind} vocab {tok.vocab_size} eod {tok.eod} bos {tok.bos} pad {tok.pad} "
          f"fingerprint {tok.fingerprint[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
