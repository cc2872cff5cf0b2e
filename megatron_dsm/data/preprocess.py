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
  complete (see ``indexed.py``); a ``PREFIX.json`` sidecar records the
  tokenizer fingerprint, counts and source files.
* Sentence splitting uses nltk Punkt without downloading anything (see
  ``SentenceSplitter``).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Iterator

import numpy as np

from megatron_dsm.config import field, options
from megatron_dsm.io import atomic_write, write_jsonl
from megatron_dsm.data import indexed
from megatron_dsm.data.tokenizer import build_tokenizer

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
DEFAULT_MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
BATCH_DOCS = 512          # documents per tokenizer call
BATCH_BYTES = 8 << 20     # ... or this many input bytes, whichever comes first


@options
class PreprocessConfig:
    """Options of tools/preprocess_data.py (Megatron-LM's flags plus a few)."""

    input: str = field(None, help="a .jsonl/.jsonl.gz/.parquet file, a glob, or a folder of them")
    output_prefix: str = field(None, help="output path prefix; writes {prefix}_{key}_{document|sentence}.bin/.idx")
    json_keys: list[str] = field(default_factory=lambda: ["text"], help="keys to extract from each record")
    tokenizer_type: str = field("auto", help="HuggingFaceTokenizer | SentencePieceTokenizer | "
                                "GPTSentencePieceTokenizer | Llama2Tokenizer | ByteLevelTokenizer | hf | "
                                "sentencepiece | byte | auto (from --tokenizer-model)")
    tokenizer_model: str | None = field(None, help="tokenizer.json, a tokenizer folder, or a SentencePiece .model")
    append_eod: bool = field(False, help="append the end-of-document token to each document")
    workers: int = field(1, help="tokenizer threads in all (split evenly over partitions)")
    partitions: int = field(1, help="contiguous input partitions processed in parallel, then concatenated")
    split_sentences: bool = field(False, help="split documents into sentences with nltk Punkt")
    lang: str = field("english", help="language of locally installed Punkt data (punkt_tab), if any")
    keep_newlines: bool = field(False, help="keep the whitespace after each sentence when splitting")
    log_interval: int = field(1000, help="documents between progress-bar refreshes")
    punkt_params: str | None = field(None, help="Punkt parameters JSON (from --save-punkt-params); "
                                     "default: local punkt_tab data, else trained on the input")
    save_punkt_params: str | None = field(None, help="write the Punkt parameters used to this JSON file")
    max_document_bytes: int = field(DEFAULT_MAX_DOCUMENT_BYTES, help="reject records larger than this")
    progress: bool = field(True, help="show the tqdm progress bar")

    def __post_init__(self):
        if not self.input:
            raise ValueError("--input is required")
        if not self.output_prefix:
            raise ValueError("--output-prefix is required")
        if isinstance(self.json_keys, str):
            self.json_keys = [self.json_keys]
        self.json_keys = list(self.json_keys)
        if not self.json_keys:
            raise ValueError("--json-keys needs at least one key")
        for name in ("workers", "partitions", "log_interval", "max_document_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"

    def key_prefix(self, key: str, base: str | None = None) -> str:
        return f"{base or self.output_prefix}_{key}_{self.level}"


# --------------------------------------------------------------------------- sentences

# nltk is imported only when sentences are split: importing it pulls in
# scipy.stats and costs ~1.5 s per process, longer than small corpora take.
_LANG_VARS_CLASS = None


def _trailing_space_lang_vars():
    """Punkt language vars whose sentence end swallows the whitespace after it;
    the lookahead then needs the next token right away, so that whitespace
    (newlines included) stays in the sentence it follows."""
    global _LANG_VARS_CLASS
    if _LANG_VARS_CLASS is None:
        from nltk.tokenize.punkt import PunktLanguageVars

        class TrailingSpaceLanguageVars(PunktLanguageVars):
            _period_context_fmt = r"""
                %(SentEndChars)s\s*
                (?=(?P<after_tok>%(NonWord)s|(?P<next_tok>\S+)))"""

        _LANG_VARS_CLASS = TrailingSpaceLanguageVars
    return _LANG_VARS_CLASS()


SLICE_CHARS = 1_000_000  # Megatron-LM hands Punkt 1M-character slices


def train_punkt(texts, max_chars: int = 4_000_000):
    """Unsupervised Punkt parameters from up to ``max_chars`` characters of ``texts``."""
    from nltk.tokenize.punkt import PunktTrainer

    trainer = PunktTrainer()
    seen = 0
    for t in texts:
        if t:
            trainer.train(t, finalize=False)
            seen += len(t)
            if seen >= max_chars:
                break
    trainer.finalize_training()
    return trainer.get_params()


def save_punkt(params, path: str | Path) -> None:
    data = {"abbrev_types": sorted(params.abbrev_types),
            "collocations": sorted(list(c) for c in params.collocations),
            "sent_starters": sorted(params.sent_starters),
            "ortho_context": sorted([k, v] for k, v in params.ortho_context.items())}
    atomic_write(path, json.dumps(data, sort_keys=True))


def load_punkt(path: str | Path):
    from nltk.tokenize.punkt import PunktParameters

    try:
        data = json.loads(Path(path).read_text())
        p = PunktParameters()
        p.abbrev_types = set(data["abbrev_types"])
        p.collocations = {tuple(c) for c in data["collocations"]}
        p.sent_starters = set(data["sent_starters"])
        for k, v in data["ortho_context"]:
            p.ortho_context[k] = v
        return p
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a Punkt parameters file ({e})") from None


def local_punkt(lang: str):
    """nltk's punkt_tab parameters for ``lang`` when installed locally (never downloads)."""
    import nltk

    try:
        nltk.data.find(f"tokenizers/punkt_tab/{lang}/")
    except LookupError:
        return None
    from nltk.tokenize.punkt import PunktTokenizer

    return PunktTokenizer(lang)._params


class SentenceSplitter:
    """Picklable Punkt splitter."""

    def __init__(self, params, keep_newlines: bool = False):
        from nltk.tokenize.punkt import PunktLanguageVars, PunktSentenceTokenizer

        self.params = params
        self.keep_newlines = keep_newlines
        lang_vars = _trailing_space_lang_vars() if keep_newlines else PunktLanguageVars()
        self._tok = PunktSentenceTokenizer(params, lang_vars=lang_vars)

    def __reduce__(self):
        return (SentenceSplitter, (self.params, self.keep_newlines))

    def split(self, text: str) -> list[str]:
        out: list[str] = []
        for i in range(0, len(text), SLICE_CHARS):
            piece = text[i:i + SLICE_CHARS]
            if not self.keep_newlines:
                out.extend(self._tok.tokenize(piece))
                continue
            # Punkt's boundary realignment drops whitespace after a closing
            # bracket or quote; with keep_newlines every gap is given back to
            # the sentence before it, so the sentences join into the text.
            starts = [s for s, _ in self._tok.span_tokenize(piece)]
            if not starts:
                out.append(piece)
                continue
            starts[0] = 0
            out.extend(piece[a:b] for a, b in zip(starts, starts[1:] + [len(piece)]))
        return out


# --------------------------------------------------------------------------- inputs

def discover_inputs(spec: str) -> list[Path]:
    """A file, a glob, or a folder (searched recursively) -> sorted input files."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(INPUT_SUFFIXES))
        if not files:
            raise ValueError(f"--input {spec}: folder holds no {'/'.join(INPUT_SUFFIXES)} files")
        return files
    if p.is_file():
        if not p.name.endswith(INPUT_SUFFIXES):
            raise ValueError(f"--input {spec}: unsupported file type (expected {', '.join(INPUT_SUFFIXES)})")
        return [p]
    matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
    files = [m for m in matches if m.name.endswith(INPUT_SUFFIXES)]
    if not files:
        raise ValueError(f"--input {spec}: no such file, folder or matching {'/'.join(INPUT_SUFFIXES)} files")
    return files


@dataclasses.dataclass(frozen=True)
class Unit:
    """A contiguous piece of one input file: plain jsonl may be cut by bytes."""

    path: str
    start: int = 0
    end: int = -1          # -1: to the end of the file
    first_line: int = 1    # line number of the first line in the piece


def _is_plain_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".json"))


def _next_line_start(path: Path, pos: int) -> int:
    """First line start at or after ``pos`` (a cut point aligned to a newline)."""
    size = path.stat().st_size
    if pos <= 0:
        return 0
    with open(path, "rb") as f:
        f.seek(pos - 1)
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                return size
            i = chunk.find(b"\n")
            if i >= 0:
                return f.tell() - len(chunk) + i + 1


def _count_newlines(path: Path, end: int) -> int:
    n = 0
    with open(path, "rb") as f:
        left = end
        while left > 0:
            chunk = f.read(min(left, 16 << 20))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def plan_partitions(files: list[Path], partitions: int) -> list[list[Unit]]:
    """Cut the concatenated input into ``partitions`` contiguous pieces of
    about equal bytes.  Cuts inside plain jsonl move to the next line start;
    a cut inside a .gz or parquet file moves to that file's end.  Empty
    partitions are dropped, so fewer may come back."""
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    wanted = [round(total * k / partitions) for k in range(1, partitions)]
    cuts: set[int] = set()
    offset = 0
    for f, size in zip(files, sizes):
        for c in wanted:
            if offset < c < offset + size:
                local = _next_line_start(f, c - offset) if _is_plain_jsonl(f) else size
                cuts.add(offset + local)
            elif c == offset:
                cuts.add(c)
        offset += size
    cuts_sorted = sorted(c for c in cuts if 0 < c < total)
    parts: list[list[Unit]] = [[]]
    offset = 0
    for f, size in zip(files, sizes):
        if offset in cuts_sorted and parts[-1]:
            parts.append([])
        inner = [c - offset for c in cuts_sorted if offset < c < offset + size]
        bounds = [0] + inner + [size]
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            if i > 0:
                parts.append([])
            first = 1 if s == 0 else _count_newlines(f, s) + 1
            parts[-1].append(Unit(str(f), s, e, first))
        offset += size
    return [p for p in parts if p]


def _iter_lines(unit: Unit) -> Iterator[tuple[int, bytes]]:
    path = unit.path
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            for n, line in enumerate(f, start=1):
                yield n, line
        return
    with open(path, "rb") as f:
        f.seek(unit.start)
        pos = unit.start
        end = unit.end
        n = unit.first_line
        for line in f:
            if pos >= end >= 0:
                break
            pos += len(line)
            yield n, line
            n += 1


# --------------------------------------------------------------------------- records

class Reject(Exception):
    pass


def _parse_line(line: bytes, keys: list[str], max_bytes: int) -> dict:
    """One jsonl line -> {key: str | list[str]}; raises Reject with the reason."""
    import orjson

    if len(line) > max_bytes:
        raise Reject(f"document of {len(line)} bytes exceeds --max-document-bytes {max_bytes}")
    if not line.strip():
        raise Reject("blank line")
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as u:
            raise Reject(f"non-UTF-8 bytes at byte {u.start}") from None
        raise Reject(f"malformed JSON: {str(e).splitlines()[0]}") from None
    return _select_keys(rec, keys)


def _select_keys(rec, keys: list[str]) -> dict:
    if not isinstance(rec, dict):
        raise Reject(f"record is a JSON {type(rec).__name__}, not an object")
    out = {}
    for k in keys:
        if k not in rec:
            raise Reject(f"missing key {k!r}")
        v = rec[k]
        if isinstance(v, list) and all(isinstance(s, str) for s in v):
            if not any(v):
                raise Reject(f"empty text in key {k!r}")
        elif not isinstance(v, str):
            raise Reject(f"key {k!r} holds a {type(v).__name__}, not text")
        elif not v:
            raise Reject(f"empty text in key {k!r}")
        out[k] = v
    return out


def iter_records(unit: Unit, keys: list[str], max_bytes: int) -> Iterator[tuple[int, int, dict | str]]:
    """Yield (line, input bytes, record or reject reason) for one unit."""
    if unit.path.endswith(".parquet"):
        yield from _iter_parquet(unit, keys, max_bytes)
        return
    for n, line in _iter_lines(unit):
        try:
            yield n, len(line), _parse_line(line, keys, max_bytes)
        except Reject as r:
            yield n, len(line), str(r)


def _iter_parquet(unit: Unit, keys: list[str], max_bytes: int):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(unit.path)
    names = set(pf.schema_arrow.names)
    missing = [k for k in keys if k not in names]
    row = 0
    for batch in pf.iter_batches(batch_size=4096, columns=[k for k in keys if k in names]):
        cols = {k: batch.column(k).to_pylist() for k in keys if k in names}
        for i in range(batch.num_rows):
            row += 1
            if missing:
                yield row, 0, f"missing key {missing[0]!r}"
                continue
            rec = {k: cols[k][i] for k in keys}
            size = sum(len(v.encode("utf-8")) if isinstance(v, str) else 0 for v in rec.values())
            if size > max_bytes:
                yield row, size, f"document of {size} bytes exceeds --max-document-bytes {max_bytes}"
                continue
            try:
                yield row, size, _select_keys(rec, keys)
            except Reject as r:
                yield row, size, str(r)


# --------------------------------------------------------------------------- encoding

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


def _build_splitter(cfg: PreprocessConfig, files: list[Path]) -> SentenceSplitter | None:
    if not cfg.split_sentences:
        return None
    if cfg.punkt_params:
        params = load_punkt(cfg.punkt_params)
    else:
        params = local_punkt(cfg.lang)
        if params is None:
            def texts():
                for u in plan_partitions(files, 1)[0]:
                    for _, _, rec in iter_records(u, cfg.json_keys, cfg.max_document_bytes):
                        if isinstance(rec, dict):
                            for v in rec.values():
                                yield v if isinstance(v, str) else " ".join(v)
            params = train_punkt(texts())
    if cfg.save_punkt_params:
        save_punkt(params, cfg.save_punkt_params)
    return SentenceSplitter(params, cfg.keep_newlines)


def _set_thread_env(threads: int) -> None:
    # Rust tokenizers size their pool from RAYON_NUM_THREADS when first used.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"


def process_partition(cfg: PreprocessConfig, units: list[Unit], out_base: str, threads: int,
                      splitter: SentenceSplitter | None, position: int = 0, tok=None) -> dict:
    """Tokenize ``units`` in order into ``{out_base}_{key}_{level}`` datasets."""
    from tqdm import tqdm

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


def _partition_entry(args):
    cfg, units, base, threads, splitter, position = args
    return process_partition(cfg, units, base, threads, splitter, position)


def run(cfg: PreprocessConfig) -> dict:
    """Run the whole tool; returns a summary dict (``ok`` False when nothing was valid)."""
    t0 = time.time()
    files = discover_inputs(cfg.input)
    # fail on a bad tokenizer before any work
    tok = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    if cfg.append_eod and tok.eod is None:
        raise ValueError(f"--append-eod: tokenizer {cfg.tokenizer_model} defines no end-of-document token")
    Path(cfg.output_prefix).parent.mkdir(parents=True, exist_ok=True)
    splitter = _build_splitter(cfg, files)
    plan = plan_partitions(files, cfg.partitions)
    threads_each = max(1, cfg.workers // max(1, len(plan)))
    if len(plan) == 1:
        results = [process_partition(cfg, plan[0], cfg.output_prefix, threads_each, splitter, tok=tok)]
        shard_bases = [cfg.output_prefix]
    else:
        shard_bases = [f"{cfg.output_prefix}.part{i:04d}" for i in range(len(plan))]
        jobs = [(cfg, units, base, threads_each, splitter, i) for i, (units, base) in enumerate(zip(plan, shard_bases))]
        with mp.get_context("spawn").Pool(len(plan)) as pool:
            results = pool.map(_partition_entry, jobs)
    order = {str(f): i for i, f in enumerate(files)}
    rejects = sorted((r for res in results for r in res["rejects"]), key=lambda r: (order[r["file"]], r["line"]))
    counter: Counter = Counter()
    for res in results:
        counter.update(res["counter"])
    ok = counter["documents"] > 0
    outputs = []
    if len(plan) > 1:
        for k in cfg.json_keys:
            final = cfg.key_prefix(k)
            shards = [cfg.key_prefix(k, b) for b in shard_bases if os.path.isfile(cfg.key_prefix(k, b) + ".idx")]
            if ok:
                dtype = indexed.optimal_dtype(tok.vocab_size)
                with indexed.IndexedDatasetWriter(final, dtype) as w:
                    for s in shards:
                        w.add_dataset(s)
            for s in shards:
                for suffix in (".bin", ".idx"):
                    if os.path.exists(s + suffix):
                        os.remove(s + suffix)
    if ok:
        for k in cfg.json_keys:
            final = cfg.key_prefix(k)
            docs, tokens = indexed.dataset_counts(final)
            indexed.write_sidecar(final, {
                "version": indexed.SIDECAR_VERSION,
                "tokenizer": tok.describe(),
                "fingerprint": tok.fingerprint,
                "dtype": np.dtype(indexed.optimal_dtype(tok.vocab_size)).name,
                "json_key": k,
                "level": cfg.level,
                "append_eod": bool(cfg.append_eod),
                "documents": docs,
                "tokens": tokens,
                "rejected": int(counter["rejected"]),
                "sources": [str(f) for f in files],
            })
            outputs.append(final)
    rej_path = f"{cfg.output_prefix}.rejects.jsonl"
    write_jsonl(rej_path, rejects)
    elapsed = time.time() - t0
    return {"ok": ok, "documents": int(counter["documents"]), "tokens": int(counter["tokens"]),
            "rejected": int(counter["rejected"]), "reasons": _reason_counts(rejects),
            "input_bytes": int(counter["input_bytes"]), "seconds": elapsed,
            "tokens_per_s": counter["tokens"] / max(elapsed, 1e-9), "outputs": outputs,
            "rejects_file": rej_path, "partitions": len(plan)}


def _reason_counts(rejects: list[dict]) -> dict:
    c: Counter = Counter()
    for r in rejects:
        reason = r["reason"]
        # group by kind: the text before the first detail
        for kind in ("malformed JSON", "non-UTF-8", "missing key", "empty text", "exceeds",
                     "blank line", "yields no tokens", "not text", "not an object"):
            if kind in reason:
                reason = kind
                break
        c[reason] += 1
    return dict(sorted(c.items()))


def format_summary(s: dict) -> str:
    lines = [f"documents: {s['documents']:,}  tokens: {s['tokens']:,}  rejected: {s['rejected']:,}  "
             f"partitions: {s['partitions']}",
             f"time: {s['seconds']:.2f} s  throughput: {s['tokens_per_s']:,.0f} tokens/s  "
             f"({s['documents'] / max(s['seconds'], 1e-9):,.0f} docs/s, "
             f"{s['input_bytes'] / max(s['seconds'], 1e-9) / 2**20:.1f} MB/s)"]
    for reason, n in s["reasons"].items():
        lines.append(f"  rejected {n:,}: {reason}")
    if s["rejected"]:
        lines.append(f"rejects listed in {s['rejects_file']}")
    for o in s["outputs"]:
        lines.append(f"wrote {o}.bin/.idx/.json")
    if not s["ok"]:
        lines.append("error: no valid document found; nothing written")
    return "\n".join(lines)
