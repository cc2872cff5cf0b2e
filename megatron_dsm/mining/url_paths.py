"""URL-path annotation inside math-related domains (paper 2.1).

For each math-related domain the pages are grouped under their URL path
prefixes of depth 1 and 2 (``/questions/`` and ``/questions/336/`` for
``https://mathoverflow.net/questions/336/title``; a prefix is the path up to
and including that segment, with a trailing ``/``).  Each prefix gets its page
count, recalled count and fraction, and up to ``samples`` example URLs and
titles, in a TSV with an empty ``accept`` column for a person to fill in with
``yes``.  ``auto_accept_fraction`` F > 0 pre-fills ``yes`` where the
recalled fraction is at least F, for unattended runs.

Pages under an accepted prefix that were not recalled become seed positives
of the next iteration (the paper's "mathoverflow.net/questions" example).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from megatron_dsm.io import atomic_path
from megatron_dsm.mining.domains import domain_of

PATH_FIELDS = ("domain", "prefix", "depth", "pages", "recalled", "recalled_fraction", "sample_urls",
               "sample_titles", "accept")
_YES = {"yes", "y", "1", "true", "x", "accept"}


def path_prefixes(url: str, max_depth: int = 2) -> list[str]:
    """Path prefixes of depth 1..max_depth: ``/a/b/c`` -> ``["/a/", "/a/b/"]``."""
    try:
        path = urlsplit(url).path or "/"
    except ValueError:
        return []
    segs = [s for s in path.split("/") if s]
    out, cur = [], "/"
    for s in segs[:max_depth]:
        cur += s + "/"
        out.append(cur)
    return out


def _under(url: str, prefix: str) -> bool:
    try:
        path = urlsplit(url).path or "/"
    except ValueError:
        return False
    return (path.rstrip("/") + "/").startswith(prefix)


@dataclass
class PrefixStats:
    domain: str
    prefix: str
    depth: int
    pages: int = 0
    recalled: int = 0
    sample_urls: list[str] = field(default_factory=list)
    sample_titles: list[str] = field(default_factory=list)
    accept: bool = False

    @property
    def recalled_fraction(self) -> float:
        return self.recalled / self.pages if self.pages else 0.0


def annotate(pages: Iterable[tuple[str, str, str]], recalled_ids: set[str], math_domains: set[str],
             auto_accept_fraction: float = 0.0, samples: int = 3, max_depth: int = 2) -> list[PrefixStats]:
    """``pages`` are (id, url, title) for all scored pages; rows for prefixes in ``math_domains`` only."""
    if not 0.0 <= auto_accept_fraction <= 1.0:
        raise ValueError(f"url paths: auto_accept_fraction must be in [0, 1], got {auto_accept_fraction}")
    table: dict[tuple[str, str], PrefixStats] = {}
    for pid, url, title in pages:
        d = domain_of(url)
        if d not in math_domains:
            continue
        for depth, pre in enumerate(path_prefixes(url, max_depth), start=1):
            s = table.get((d, pre))
            if s is None:
                s = table[(d, pre)] = PrefixStats(d, pre, depth)
            s.pages += 1
            if pid in recalled_ids:
                s.recalled += 1
            if len(s.sample_urls) < samples:
                s.sample_urls.append(url)
                if title:
                    s.sample_titles.append(title)
    rows = sorted(table.values(), key=lambda s: (s.domain, s.depth, -s.pages, s.prefix))
    if auto_accept_fraction > 0:
        for s in rows:
            s.accept = s.recalled_fraction >= auto_accept_fraction
    return rows


def _cell(s: str) -> str:
    return " ".join(s.replace("|", "/").split())


def write_tsv(path: str | Path, rows: list[PrefixStats]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(PATH_FIELDS)
        for s in rows:
            w.writerow([s.domain, s.prefix, s.depth, s.pages, s.recalled, f"{s.recalled_fraction:.4f}",
                        " | ".join(_cell(u) for u in s.sample_urls),
                        " | ".join(_cell(t) for t in s.sample_titles), "yes" if s.accept else ""])


def read_accepted(path: str | Path) -> list[tuple[str, str]]:
    """(domain, prefix) rows whose ``accept`` cell says yes; one clear error for a malformed file."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f, delimiter="\t")
        missing = {"domain", "prefix", "accept"} - set(r.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: annotation TSV lacks column(s) {sorted(missing)}")
        return [(row["domain"], row["prefix"]) for row in r
                if (row.get("accept") or "").strip().lower() in _YES]


def expansion_ids(pages: Iterable[tuple[str, str]], accepted: list[tuple[str, str]],
                  recalled_ids: set[str]) -> set[str]:
    """Ids of pages under an accepted (domain, prefix) that were not recalled."""
    by_domain: dict[str, list[str]] = {}
    for d, p in accepted:
        by_domain.setdefault(d, []).append(p)
    out = set()
    for pid, url in pages:
        if pid in recalled_ids:
            continue
        pres = by_domain.get(domain_of(url))
        if pres and any(_under(url, p) for p in pres):
            out.add(pid)
    return out
