"""Cleaning: cut the segments a benchmark text reaches out of each document.

Segments are lines by default (``segment="line"``): the text between two
``\\n``.  Extracted web text (trafilatura, WET) puts one paragraph per line,
so a line is the smallest unit that still carries the whole contaminated
sentence, and removing lines leaves the rest of a page intact (a forum page
quoting a GSM8K problem keeps its other posts).  ``segment="paragraph"`` cuts
at blank lines instead, for text that wraps paragraphs over several lines.
A 10-gram may span segment boundaries (problems are often wrapped); every
segment that the matching 10-gram touches is removed.  Short benchmark texts
(``short_min`` to ``ngram - 1`` tokens, e.g. a MATH answer
``\\frac{\\sqrt{3}}{2}``) remove a segment whose whole token sequence equals
them.

A batch of documents is joined and scanned once; candidate n-grams come from
the index's pre-filter and sorted hashes, and each is verified token by token
before anything is removed.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from typing import Sequence

import numpy as np

from megatron_dsm.config import ConfigError
from megatron_dsm.mining.decontaminate.index import BenchmarkIndex, DecontConfig
from megatron_dsm.mining.decontaminate.normalise import Scan, ngram_hashes, scan, window_hashes


@dataclasses.dataclass
class Hit:
    rule: str  # "ngram" or "exact"
    text_index: int  # into BenchmarkIndex.texts
    segments: tuple[int, ...]  # segment indices (within the document) removed
    match: str  # normalised matched tokens


@dataclasses.dataclass
class CleanResult:
    text: str  # the document with contaminated segments removed
    segments: int  # segments in the input document
    removed: list[int]  # indices of removed segments
    hits: list[Hit]

    @property
    def contaminated(self) -> bool:
        return bool(self.removed)


_PARA_BREAK = re.compile(r"\n[^\S\n]*\n\s*")


def _split_segments(text: str, mode: str) -> tuple[list[str], list[str]]:
    """Segments of ``text`` and the separators after each (for re-joining)."""
    if mode == "line":
        segs = text.split("\n")
        return segs, ["\n"] * (len(segs) - 1) + [""]
    segs, seps, pos = [], [], 0
    for m in _PARA_BREAK.finditer(text):
        segs.append(text[pos:m.start()])
        seps.append(m.group())
        pos = m.end()
    segs.append(text[pos:])
    seps.append("")
    return segs, seps


def merge_results(results: Sequence[CleanResult]) -> CleanResult:
    """One result for a record cleaned in parts (the messages of a chat):
    segment numbers stay per part, hits and removals are pooled."""
    if len(results) == 1:
        return results[0]
    removed, hits, segs = [], [], 0
    for r in results:
        removed.extend(r.removed)
        hits.extend(r.hits)
        segs += max(r.segments, 0)
    return CleanResult("".join(r.text for r in results), segs, removed, hits)


@dataclasses.dataclass
class _Batch:
    """Documents joined for one scan, with their segment boundaries.

    Documents are separated by U+FFFF, neither whitespace nor a token (a
    U+FFFF inside a text is replaced by U+FFFE, also a separator, same
    length).  Segment k of the batch lies between ``bounds[k-1]`` and
    ``bounds[k]``: line breaks (or blank-line runs) and document separators.
    """

    scan: Scan
    doc_starts: np.ndarray  # code point offset of each document
    bounds: np.ndarray      # code point offsets ending each segment
    doc_seg0: np.ndarray    # first segment (batch numbering) of each document
    removed: dict[int, set[int]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    hits: dict[int, list[Hit]] = dataclasses.field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, texts: Sequence[str], segment: str) -> "_Batch":
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        doc_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        joined = "\uffff".join(t.replace("\uffff", "\ufffe") if "\uffff" in t else t for t in texts)
        s = scan(joined)
        if segment == "line":
            cp = s.codepoints
            bounds = np.flatnonzero((cp == 10) | (cp == 0xFFFF))
        else:
            paras = np.fromiter((mm.start() for mm in _PARA_BREAK.finditer(joined)), dtype=np.int64)
            bounds = np.sort(np.concatenate([paras, doc_starts[1:] - 1]))
        doc_seg0 = np.searchsorted(bounds, doc_starts, side="left")
        return cls(s, doc_starts, bounds, doc_seg0)

    def doc_of(self, pos):
        return np.searchsorted(self.doc_starts, pos, side="right") - 1

    def remove(self, doc: int, rule: str, segs: tuple[int, ...], sources: list[int],
               tokens: tuple[str, ...]) -> None:
        self.removed[doc].update(segs)
        match = " ".join(tokens)
        self.hits[doc].extend(Hit(rule, t, segs, match) for t in sources)


class Decontaminator:
    """Pure-Python/numpy core: clean strings against a ``BenchmarkIndex``."""

    def __init__(self, index: BenchmarkIndex, cfg: DecontConfig | None = None):
        self.index = index
        self.cfg = cfg or DecontConfig(ngram=index.ngram, short_min=index.short_min)
        if (self.cfg.ngram, self.cfg.short_min) != (index.ngram, index.short_min):
            raise ConfigError(f"index built for ngram={index.ngram}, short_min={index.short_min}; "
                              f"config asks ngram={self.cfg.ngram}, short_min={self.cfg.short_min}")

    def clean(self, text: str) -> CleanResult:
        return self.clean_batch([text])[0]

    def clean_batch(self, texts: Sequence[str]) -> list[CleanResult]:
        """Clean many documents with one numpy scan per ``batch_chars``."""
        out: list[CleanResult] = []
        batch: list[str] = []
        size = 0
        for t in texts:
            batch.append(t)
            size += len(t) + 1
            if size >= self.cfg.batch_chars:
                out.extend(self._clean_one_batch(batch))
                batch, size = [], 0
        if batch:
            out.extend(self._clean_one_batch(batch))
        return out

    def _clean_one_batch(self, texts: list[str]) -> list[CleanResult]:
        batch = _Batch.of(texts, self.cfg.segment)
        self._ngram_rule(batch)
        self._short_rule(batch)
        return [self._cut(d, text, batch) for d, text in enumerate(texts)]

    def _ngram_rule(self, batch: _Batch) -> None:
        """n-grams: hash pre-filter, sorted-hash look-up, then a token-by-token check."""
        n, idx, s = self.cfg.ngram, self.index, batch.scan
        if len(s.starts) < n or not len(idx.ngram_hash):
            return
        g = ngram_hashes(s.hashes, n)
        cand = idx.ngram_candidates(g)
        if not len(cand):
            return
        first_pos, last_pos = s.starts[cand], s.starts[cand + n - 1]
        same_doc = batch.doc_of(first_pos) == batch.doc_of(last_pos)
        cand, first_pos, last_pos = cand[same_doc], first_pos[same_doc], last_pos[same_doc]
        seg_a = np.searchsorted(batch.bounds, first_pos, side="left")
        seg_b = np.searchsorted(batch.bounds, last_pos, side="left")
        docs = batch.doc_of(first_pos)
        for i, a, b, d in zip(cand.tolist(), seg_a.tolist(), seg_b.tolist(), docs.tolist()):
            toks = s.tokens(i, i + n)
            srcs = idx.ngram_sources(g[i], toks)
            if not srcs:
                continue  # hash collision, not a real match
            seg0 = int(batch.doc_seg0[d])
            batch.remove(d, "ngram", tuple(range(a - seg0, b - seg0 + 1)), srcs, toks)

    def _short_rule(self, batch: _Batch) -> None:
        """Short texts: whole segments equal to a short benchmark text."""
        idx, s = self.index, batch.scan
        m = len(s.starts)
        if not m or not len(idx.short_hash):
            return
        seg_first = np.searchsorted(s.starts, batch.bounds, side="right")  # first token after each bound
        first = np.concatenate([[0], seg_first])
        count = np.diff(np.concatenate([first, [m]]))
        sel = np.flatnonzero((count >= self.cfg.short_min) & (count < self.cfg.ngram))
        if not len(sel):
            return
        sh = window_hashes(s.hashes, first[sel], count[sel])
        for k in idx.short_candidates(sh).tolist():
            seg = int(sel[k])
            f0, c0 = int(first[seg]), int(count[seg])
            toks = s.tokens(f0, f0 + c0)
            srcs = idx.short_sources(sh[k], toks)
            if not srcs:
                continue
            d = int(batch.doc_of(s.starts[f0]))
            batch.remove(d, "exact", (seg - int(batch.doc_seg0[d]),), srcs, toks)

    def _cut(self, d: int, text: str, batch: _Batch) -> CleanResult:
        """Document ``d`` without its removed segments (separators kept between the rest)."""
        if d not in batch.removed:
            return CleanResult(text, -1, [], [])
        segs, seps = _split_segments(text, self.cfg.segment)
        gone = batch.removed[d]
        kept = [(sg, sp) for k, (sg, sp) in enumerate(zip(segs, seps)) if k not in gone]
        cleaned = "".join(sg + sp for sg, sp in kept[:-1]) + (kept[-1][0] if kept else "")
        return CleanResult(cleaned, len(segs), sorted(gone), batch.hits[d])
