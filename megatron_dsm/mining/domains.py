"""Domain discovery (paper 2.1): a domain is math-related when more than
``min_fraction`` (10%) of ALL its pages were recalled.

Grouping uses every scored page, not only recalled ones, because the
recalled fraction needs the denominator.  Domains are host names, lower-case,
without port and without a leading ``www.`` (so ``www.x.org`` and ``x.org``
count together).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from megatron_dsm.io import atomic_path

DOMAIN_FIELDS = ("domain", "pages", "recalled", "recalled_fraction", "math_related")


def domain_of(url: str | None) -> str:
    """Host of ``url`` ("" when there is none or it does not parse)."""
    if not url:
        return ""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


@dataclass
class DomainStats:
    domain: str
    pages: int = 0
    recalled: int = 0
    recalled_fraction: float = 0.0
    math_related: bool = False


def discover(pages: Iterable[tuple[str, str]], recalled_ids: set[str], min_fraction: float = 0.10,
             min_pages: int = 1) -> list[DomainStats]:
    """``pages`` are (id, url) for every scored page.  Returns all domains, most recalled pages first.

    Pages without a URL are not attributed to any domain.
    """
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"domains: min_fraction must be in [0, 1), got {min_fraction}")
    table: dict[str, DomainStats] = {}
    for pid, url in pages:
        d = domain_of(url)
        if not d:
            continue
        s = table.get(d)
        if s is None:
            s = table[d] = DomainStats(d)
        s.pages += 1
        if pid in recalled_ids:
            s.recalled += 1
    for s in table.values():
        s.recalled_fraction = s.recalled / s.pages
        s.math_related = s.recalled_fraction > min_fraction and s.pages >= min_pages
    return sorted(table.values(), key=lambda s: (-s.recalled, -s.pages, s.domain))


def write_domains(path: str | Path, stats: list[DomainStats]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(DOMAIN_FIELDS)
        for s in stats:
            w.writerow([s.domain, s.pages, s.recalled, f"{s.recalled_fraction:.4f}", int(s.math_related)])


def read_domains(path: str | Path) -> list[DomainStats]:
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f, delimiter="\t")
        return [DomainStats(row["domain"], int(row["pages"]), int(row["recalled"]),
                            float(row["recalled_fraction"]), row["math_related"] == "1") for row in r]


def as_dicts(stats: list[DomainStats]) -> list[dict]:
    return [asdict(s) for s in stats]
