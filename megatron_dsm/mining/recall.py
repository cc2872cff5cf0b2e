"""Recall: score every page, then keep the best ones.

Every page gets ``score`` = P(math) from the classifier and ``tokens`` (its
whitespace-separated token count: tokenizer-free, so the budget means the
same thing before a tokenizer exists) stored with the document.  Selection is
global, so it runs on the small per-page index (id, score, tokens) after all
scoring tasks finish: pages with ``score >= threshold`` are kept, and with a
``token_budget`` only the top-ranked ones until the budget is reached (the
paper keeps the top 40B tokens in iteration 1).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from megatron_dsm.io import atomic_path, atomic_write

INDEX_FIELDS = ("id", "score", "tokens", "url", "title")


def count_tokens(text: str) -> int:
    return len(text.split())


@dataclass
class IndexRow:
    id: str
    score: float
    tokens: int
    url: str
    title: str


def write_index(path: str | Path, rows: Iterable[IndexRow]) -> None:
    """One TSV per scoring task, written under a temp name and renamed when complete."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(INDEX_FIELDS)
        for r in rows:
            w.writerow([r.id, f"{r.score:.6f}", r.tokens, _clean(r.url), _clean(r.title)])


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
                yield IndexRow(row[0], float(row[1]), int(row[2]), row[3], row[4])


def select(rows: Iterable[IndexRow], threshold: float = 0.5, token_budget: int = 0) -> set[str]:
    """Ids to keep: score >= threshold, best first, until ``token_budget`` tokens (0 = no budget).

    Ties are broken by id so the choice does not depend on the order shards were read.
    """
    cand = sorted((r for r in rows if r.score >= threshold), key=lambda r: (-r.score, r.id))
    if token_budget <= 0:
        return {r.id for r in cand}
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
