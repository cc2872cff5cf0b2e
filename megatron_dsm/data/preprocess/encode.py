"""Tokenizing one partition into indexed datasets.

Documents are tokenized in large batches by the tokenizer's own thread pool
(Rust ``encode_batch`` for tokenizers, ``num_threads`` for SentencePiece)
while the next batch is parsed; ids become numpy arrays and are written
batch-wise.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np
from tqdm import tqdm

from megatron_dsm.data import indexed
from megatron_dsm.data.preprocess.config import PreprocessConfig
from megatron_dsm.data.preprocess.inputs import Unit, iter_records
from megatron_dsm.data.preprocess.sentences import SentenceSplitter
from megatron_dsm.data.tokenizer import build_tokenizer

BATCH_DOCS = 512          # documents per tokenizer call
BATCH_BYTES = 8 << 20     # ... or this many input bytes, whichever comes first


class _Encoder:
    """Turns a batch of records into per-key flat ids + sequence lengths."""

    def __init__(self, cfg: PreprocessConfig, tokenizer, splitter: SentenceSplitter | None, threads: int):
        self.cfg = cfg
        self.tok = tokenizer
        self.splitter = splitter
        self.threads = threads
        self.eod = tokenizer.eod
        if cfg.append_eod and self.eod is None:
            raise ValueError("--append-eod: the tokenizer defines no end-of-document token")
        fast = getattr(getattr(tokenizer, "_tok", None), "encode_batch_fast", None)
        self._fast = fast if tokenizer.kind == "hf" else None

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        if self._fast is not None:
            return [e.ids for e in self._fast(texts, add_special_tokens=False)]
        return self.tok.batch_encode(texts, num_threads=self.threads)

    def encode(self, records: list[dict]) -> dict[str, tuple]:
        """-> {key: (flat ids, seq lengths, seqs per doc, doc token counts)};
        a document whose key yields no tokens gets 0 sequences (caller rejects)."""
        out = {}
        for key in self.cfg.json_keys:
            pieces: list[list[str]] = []
            for r in records:
                v = r[key]
                if isinstance(v, list):
                    pieces.append(v)
                elif self.splitter is not None:
                    pieces.append(self.splitter.split(v))
                else:
                    pieces.append([v])
            flat_texts = list(chain.from_iterable(pieces))
            ids = self._encode_texts(flat_texts)
            seq_lens: list[int] = []
            seqs_per_doc: list[int] = []
            doc_tokens: list[int] = []
            chunks: list[list[int]] = []
            j = 0
            for p in pieces:
                n_before = len(seq_lens)
                total = 0
                for _ in range(len(p)):
                    s = ids[j]
                    j += 1
                    if s:  # Megatron-LM drops sentences that yield no tokens
                        chunks.append(s)
                        seq_lens.append(len(s))
                        total += len(s)
                if total and self.cfg.append_eod:
                    chunks.append([self.eod])
                    seq_lens[-1] += 1
                    total += 1
                seqs_per_doc.append(len(seq_lens) - n_before)
                doc_tokens.append(total)
            n = sum(seq_lens)
            flat = np.fromiter(chain.from_iterable(chunks), dtype=np.int64, count=n)
            out[key] = (flat, np.asarray(seq_lens, np.int32), np.asarray(seqs_per_doc, np.int64),
                        np.asarray(doc_tokens, np.int64))
        return out


def _batches(units: list[Unit], cfg: PreprocessConfig, rejects: list, counter: Counter):
    """Yield lists of (record, bytes); bad records go to ``rejects``."""
    batch, nbytes = [], 0
    for u in units:
        for line, size, rec in iter_records(u, cfg.json_keys, cfg.max_document_bytes):
            counter["input_bytes"] += size
            if isinstance(rec, str):
                rejects.append({"file": u.path, "line": line, "reason": rec})
                counter["rejected"] += 1
                continue
            batch.append((u.path, line, rec))
            nbytes += size
            if len(batch) >= BATCH_DOCS or nbytes >= BATCH_BYTES:
                yield batch
                batch, nbytes = [], 0
    if batch:
        yield batch


def _set_thread_env(threads: int) -> None:
    # Rust tokenizers size their pool from RAYON_NUM_THREADS when first used.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"


def process_partition(cfg: PreprocessConfig, units: list[Unit], out_base: str, threads: int,
                      splitter: SentenceSplitter | None, position: int = 0, tok=None) -> dict:
    """Tokenize ``units`` in order into ``{out_base}_{key}_{level}`` datasets."""
    _set_thread_env(threads)
    if tok is None:
        tok = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    enc = _Encoder(cfg, tok, splitter, threads)
    dtype = indexed.optimal_dtype(tok.vocab_size)
    writers = {k: indexed.IndexedDatasetWriter(cfg.key_prefix(k, out_base), dtype) for k in cfg.json_keys}
    rejects: list[dict] = []
    counter: Counter = Counter()
    t0 = time.time()
    bar = tqdm(unit="doc", position=position, disable=not cfg.progress, mininterval=1.0,
               desc=f"tokenize[{position}]" if cfg.partitions > 1 else "tokenize", file=sys.stderr)
    last_log = 0
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = None
            # batch k is encoded on the pool thread (the Rust tokenizer drops
            # the GIL) while batch k+1 is parsed and batch k-1 written here
            for batch in chain(_batches(units, cfg, rejects, counter), [None]):
                fut = pool.submit(enc.encode, [r for _, _, r in batch]) if batch is not None else None
                if pending is not None:
                    done_batch, done_fut = pending
                    _write_batch((done_batch, done_fut.result()), writers, cfg, rejects, counter)
                    bar.update(len(done_batch))
                    if counter["documents"] - last_log >= cfg.log_interval:
                        last_log = counter["documents"]
                        dt = max(time.time() - t0, 1e-9)
                        bar.set_postfix_str(f"{counter['tokens'] / dt:,.0f} tok/s", refresh=False)
                pending = (batch, fut) if fut is not None else None
        if counter["documents"] == 0:
            for w in writers.values():
                w.abort()
        else:
            for w in writers.values():
                w.finalize()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        bar.close()
    return {"rejects": rejects, "counter": dict(counter), "seconds": time.time() - t0,
            "tokenizer": tok.describe(), "dtype": np.dtype(dtype).name}


def _write_batch(pending, writers, cfg, rejects, counter) -> None:
    batch, encoded = pending
    keys = cfg.json_keys
    # a record with zero tokens under any key is rejected as a whole, so the
    # datasets of all keys keep the same documents in the same order
    empty = np.zeros(len(batch), dtype=bool)
    for k in keys:
        empty |= encoded[k][3] == 0
    for i in np.flatnonzero(empty):
        path, line, _ = batch[i]
        rejects.append({"file": path, "line": line, "reason": "text yields no tokens"})
        counter["rejected"] += 1
    keep = ~empty
    for k in keys:
        flat, seq_lens, per_doc, doc_tokens = encoded[k]
        if empty.any():
            flat = flat[np.repeat(keep, doc_tokens)]
            seq_lens = seq_lens[np.repeat(keep, per_doc)]
            per_doc = per_doc[keep]
        writers[k].add_batch(flat, seq_lens, per_doc)
        counter["tokens"] += int(flat.size)
    counter["documents"] += int(keep.sum())
