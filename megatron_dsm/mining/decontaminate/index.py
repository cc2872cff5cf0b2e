"""The options of the stage and the index of benchmark hashes it matches against.

The index holds the hash of every benchmark n-gram and of every short
benchmark text (``short_min`` to ``ngram - 1`` tokens), sorted, with where
each came from.  A byte table indexed by the top bits of an n-gram hash
rejects almost every document n-gram with one gather; the rest are looked
up in the sorted array, and every hash hit is then checked token by token
against the benchmark text, so hash collisions never remove text.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.mining.decontaminate.benchmarks import BenchmarkText, load_benchmarks
from megatron_dsm.mining.decontaminate.normalise import ngram_hashes, scan, window_hashes


@options
class DecontConfig:
    """Options of the decontamination stage (also the CLI flags)."""

    ngram: int = field(10, help="n of the n-grams matched against the benchmarks (paper: 10)")
    short_min: int = field(3, help="benchmark texts with short_min..ngram-1 tokens are matched "
                                   "exactly against whole segments; shorter ones are ignored")
    segment: str = field("line", choices=("line", "paragraph"),
                         help="unit removed around a hit: a line, or a blank-line separated paragraph")
    benchmark_names: tuple[str, ...] = field((), help="only these benchmarks (default: all present)")
    batch_chars: int = field(4_000_000, help="characters scanned per numpy batch")
    max_hits_listed: int = field(20, help="hits listed per document in the report")

    def __post_init__(self):
        if self.ngram < 1:
            raise ConfigError(f"ngram must be >= 1, got {self.ngram}")
        if not 1 <= self.short_min <= self.ngram:
            raise ConfigError(f"short_min must be in 1..ngram ({self.ngram}), got {self.short_min}")
        if self.segment not in ("line", "paragraph"):
            raise ConfigError(f"segment must be 'line' or 'paragraph', got {self.segment!r}")
        if self.batch_chars < 1:
            raise ConfigError(f"batch_chars must be >= 1, got {self.batch_chars}")
        self.benchmark_names = tuple(self.benchmark_names or ())


def _sorted_hits(table: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Indices of ``hashes`` present in the sorted ``table``."""
    if not len(table):
        return np.zeros(0, dtype=np.int64)
    pos = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
    return np.flatnonzero(table[pos] == hashes)


class BenchmarkIndex:
    """Hashes of every benchmark n-gram and of every short benchmark text.

    Arrays sorted by hash hold, for each entry, which benchmark text it came
    from and at which token; candidate hits are verified against the stored
    folded benchmark text, so only real token matches count.
    """

    FILTER_BITS = 24  # the pre-filter has one entry per value of a hash's top bits

    def __init__(self, texts: Sequence[BenchmarkText], ngram: int = 10, short_min: int = 3):
        self.texts = list(texts)
        self.ngram = ngram
        self.short_min = short_min
        sep = "\uffff"
        joined = sep.join(t.text for t in self.texts)
        lengths = np.fromiter((len(t.text) for t in self.texts), dtype=np.int64, count=len(self.texts))
        text_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]) if len(lengths) else lengths
        s = scan(joined)
        self.scan = s
        tok_text = np.searchsorted(text_starts, s.starts, side="right") - 1
        # token range of every text
        first = np.searchsorted(tok_text, np.arange(len(self.texts)), side="left")
        last = np.searchsorted(tok_text, np.arange(len(self.texts)), side="right")
        self.tok_first = first
        count = last - first
        self.text_tokens = count
        # n-grams lying inside one text
        g_hash = ngram_hashes(s.hashes, ngram)
        g_first = np.arange(len(g_hash))
        ok = tok_text[g_first] == tok_text[g_first + ngram - 1]  # inside one text
        g_first, g_hash = g_first[ok], g_hash[ok]
        order = np.argsort(g_hash, kind="stable")
        self.ngram_hash = g_hash[order]
        self.ngram_tok = g_first[order]  # first token (in self.scan) of the n-gram
        self.ngram_text = tok_text[self.ngram_tok] if len(order) else np.zeros(0, dtype=np.int64)
        short = np.flatnonzero((count >= short_min) & (count < ngram))
        sh = window_hashes(s.hashes, first[short], count[short])
        order = np.argsort(sh, kind="stable")
        self.short_hash = sh[order]
        self.short_text = short[order]
        self.filter = np.zeros(1 << self.FILTER_BITS, dtype=bool)
        self.filter[(self.ngram_hash >> np.uint64(64 - self.FILTER_BITS)).astype(np.int64)] = True
        self.ignored_texts = int(np.count_nonzero(count < short_min))

    @classmethod
    def from_dir(cls, root: str | Path, cfg: DecontConfig | None = None) -> "BenchmarkIndex":
        cfg = cfg or DecontConfig()
        return cls(load_benchmarks(root, cfg.benchmark_names), cfg.ngram, cfg.short_min)

    def summary(self) -> dict:
        per = defaultdict(int)
        for t in self.texts:
            per[t.benchmark] += 1
        return {"texts": len(self.texts), "texts_per_benchmark": dict(per),
                "ngrams": int(len(self.ngram_hash)), "unique_ngrams": int(len(np.unique(self.ngram_hash))),
                "short_texts": int(len(self.short_hash)), "ignored_texts_under_short_min": self.ignored_texts}

    def ngram_candidates(self, hashes: np.ndarray) -> np.ndarray:
        """Indices of the n-gram ``hashes`` that occur in the index (hash
        equality only: a caller verifies tokens with ``ngram_sources``)."""
        cand = np.flatnonzero(self.filter[hashes >> np.uint64(64 - self.FILTER_BITS)])
        if len(cand):
            cand = cand[_sorted_hits(self.ngram_hash, hashes[cand])]
        return cand

    def short_candidates(self, hashes: np.ndarray) -> np.ndarray:
        """Indices of the whole-segment ``hashes`` equal to a short text's hash."""
        return _sorted_hits(self.short_hash, hashes)

    def ngram_sources(self, h: int, tokens: tuple[str, ...]) -> list[int]:
        """Benchmark texts that really contain the n-gram ``tokens`` (hash ``h``)."""
        h = np.uint64(h)  # a Python int would make numpy convert the whole array
        lo = np.searchsorted(self.ngram_hash, h, side="left")
        hi = np.searchsorted(self.ngram_hash, h, side="right")
        out = []
        for k in range(lo, hi):
            t0 = int(self.ngram_tok[k])
            if self.scan.tokens(t0, t0 + self.ngram) == tokens:
                out.append(int(self.ngram_text[k]))
        return out

    def short_sources(self, h: int, tokens: tuple[str, ...]) -> list[int]:
        h = np.uint64(h)
        lo = np.searchsorted(self.short_hash, h, side="left")
        hi = np.searchsorted(self.short_hash, h, side="right")
        out = []
        for k in range(lo, hi):
            t = int(self.short_text[k])
            f = int(self.tok_first[t])
            if self.scan.tokens(f, f + int(self.text_tokens[t])) == tokens:
                out.append(t)
        return out
