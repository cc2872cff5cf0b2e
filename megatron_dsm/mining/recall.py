"""Recall: score every page, then keep the best ones.

Every page gets ``score`` = P(math) from the classifier.  Selection is
global, so it runs on the small per-page index (id, score, tokens, chars)
after all scoring tasks finish: pages with ``score >= threshold`` are kept,
and with a ``token_budget`` only the top-ranked ones until the budget is
reached (the paper keeps the top 40B tokens in iteration 1).

Budgets are in tokens of the tokenizer the corpus will be preprocessed with
(:class:`TokenCounting`, built by ``megatron_dsm.data.tokenizer``; ``encode``
adds no special tokens, so one document costs its count plus the EOD that
``--append-eod`` adds).  Only pages at or above the threshold are counted:
the others never enter a selection.  Tokenizing every candidate is exact but
costs a BPE pass over them; with ``sample_rate`` < 1 a fixed share of them
(chosen by a hash of the page id, so the same pages whatever the task
count) is counted and every other candidate's count is estimated as its
length in characters times the tokens per character of sampled pages of
similar score (:func:`fill_estimates`, which says which was done).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from megatron_dsm.data.tokenizer import Tokenizer, build_tokenizer
from megatron_dsm.io import atomic_path, atomic_write

INDEX_FIELDS = ("id", "score", "tokens", "chars", "url", "title")
NOT_COUNTED = -1


@dataclass
class IndexRow:
    id: str
    score: float
    tokens: int  # NOT_COUNTED until counted or estimated
    chars: int
    url: str
    title: str


def sample_unit(page_id: str) -> float:
    """A page's fixed position in [0, 1) for sampling (a hash of its id, not of where it was read)."""
    return int.from_bytes(hashlib.blake2b(page_id.encode("utf-8"), digest_size=8).digest(), "little") / 2.0 ** 64


_TOKENIZERS: dict = {}


@dataclass
class TokenCounting:
    """Which pages get their tokens counted, with which tokenizer (picklable: the tokenizer loads in the worker)."""

    tokenizer_type: str = "auto"
    tokenizer_model: str | None = None
    sample_rate: float = 1.0
    min_score: float = 0.0

    def tokenizer(self) -> Tokenizer:
        key = (self.tokenizer_type, self.tokenizer_model)
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = build_tokenizer(self.tokenizer_type, self.tokenizer_model or None)
        return _TOKENIZERS[key]

    def wanted(self, page_id: str, score: float) -> bool:
        return score >= self.min_score and (self.sample_rate >= 1.0 or sample_unit(page_id) < self.sample_rate)

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer().batch_encode(list(texts))] if texts else []


def fill_estimates(rows: Sequence[IndexRow], threshold: float, pages_per_bin: int = 50, max_bins: int = 20) -> dict:
    """Give every candidate (score >= threshold) a token count: its own, or its characters times the tokens per
    character of the counted candidates of similar score.  Returns how the counts were obtained, for the report.

    The ratio is taken per score bin (counted candidates sorted by score, ``pages_per_bin`` a bin, at most
    ``max_bins``) because it follows the score: the top-ranked pages are dense LaTeX, which a BPE splits finely
    (GPT-NeoX on the shared web pages: 0.38 tokens per character in the top 500, 0.32 over all candidates; one
    ratio for all candidates would keep 1.11M tokens for a budget of 1M there, per-bin ratios keep 1.00M).
    """
    cand = [r for r in rows if r.score >= threshold]
    counted = sorted((r for r in cand if r.tokens != NOT_COUNTED), key=lambda r: r.score)
    if len(counted) == len(cand):
        return {"method": "exact", "pages_counted": len(counted)}
    if not counted:
        raise ValueError(f"no page scored >= {threshold} had its tokens counted: raise the token sample rate")
    k = max(1, min(max_bins, len(counted) // pages_per_bin))
    bins = [counted[i * len(counted) // k:(i + 1) * len(counted) // k] for i in range(k)]
    uppers = [b[-1].score for b in bins[:-1]]  # bin i holds scores up to uppers[i]
    ratios = [sum(r.tokens for r in b) / max(1, sum(r.chars for r in b)) for b in bins]
    for r in cand:
        if r.tokens == NOT_COUNTED:
            r.tokens = round(r.chars * ratios[bisect.bisect_left(uppers, r.score)])
    return {"method": "sampled", "pages_counted": len(counted), "pages_estimated": len(cand) - len(counted),
            "score_bins": [round(b[0].score, 4) for b in bins], "tokens_per_char": [round(x, 6) for x in ratios]}


def write_index(path: str | Path, rows: Iterable[IndexRow]) -> None:
    """One TSV per scoring task, written under a temp name and renamed when complete."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(INDEX_FIELDS)
        for r in rows:
            w.writerow([r.id, f"{r.score:.6f}", r.tokens, r.chars, _clean(r.url), _clean(r.title)])


def _clean(s: str | None) -> str:
    return " ".join((s or "").split())


def read_index(folder: str | Path) -> Iterator[IndexRow]:
    files = sorted(Path(folder).glob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"no score index (*.tsv) in {folder}")
    for p in files:
        with open(p, newline="", encoding="utf-8") as f:
            r = csv.reader(f, delimiter="\t")
            header = next(r, None)
            if tuple(header or ()) != INDEX_FIELDS:
                raise ValueError(f"{p}: not a score index (header {header})")
            for row in r:
                yield IndexRow(row[0], float(row[1]), int(row[2]), int(row[3]), row[4], row[5])


def select(rows: Iterable[IndexRow], threshold: float = 0.5, token_budget: int = 0) -> set[str]:
    """Ids to keep: score >= threshold, best first, until ``token_budget`` tokens (0 = no budget).

    The top-ranked prefix that fits: selection stops at the first page that would exceed the budget, so the
    kept total is within one page of it.  Ties are broken by id so the choice does not depend on the order
    shards were read.
    """
    cand = sorted((r for r in rows if r.score >= threshold), key=lambda r: (-r.score, r.id))
    if token_budget <= 0:
        return {r.id for r in cand}
    if any(r.tokens == NOT_COUNTED for r in cand):
        raise ValueError("select: candidates without a token count (call fill_estimates first)")
    kept, total = set(), 0
    for r in cand:
        if total + r.tokens > token_budget:
            break
        kept.add(r.id)
        total += r.tokens
    return kept


def write_ids(path: str | Path, ids: Iterable[str]) -> None:
    atomic_write(path, "".join(i + "\n" for i in sorted(ids)))


def read_ids(path: str | Path) -> set[str]:
    return {ln for ln in Path(path).read_text(encoding="utf-8").split("\n") if ln}


def overlap(current: set[str], previous: set[str]) -> float:
    """Share of this iteration's collection already collected by the previous one (paper: stop at 98%)."""
    if not current:
        return 1.0 if not previous else 0.0
    return len(current & previous) / len(current)
