"""Corpus deduplication: exact (URL, normalised text) and near (MinHash LSH).

The paper URL-deduplicates and near-deduplicates Common Crawl before recall.
Three checks run in order on every document; the first that fires drops it:

* ``url``: the same normalised URL was seen (scheme and host lower-cased,
  default port, ``#fragment`` and a trailing ``/`` dropped; query kept, since
  ``?id=`` often selects the page).
* ``exact``: the same normalised text was seen: case-folded, runs of
  whitespace collapsed, ends stripped; punctuation is *kept* because in
  mathematics ``x+y`` and ``x-y`` are different pages.  Keyed by a 128-bit
  BLAKE2b digest.
* ``near``: MinHash (datasketch) over word ``shingle_words``-grams, looked up
  in a MinHash LSH index for Jaccard ``threshold``; an LSH candidate counts
  only when the MinHash estimate of its Jaccard similarity reaches the
  threshold, which removes most of LSH's banding false positives.

The first copy is kept (input order).  State is in memory, per process: under
a datatrove executor with several tasks each task deduplicates its own shard;
for a corpus that must be deduplicated across shards run this step with one
task, or datatrove's multi-stage ``minhash`` steps at cluster scale.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

from megatron_dsm.config import ConfigError, field, options

try:
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # pragma: no cover - datatrove is in requirements.txt
    PipelineStep = object  # type: ignore[assignment,misc]

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


@options
class DedupConfig:
    """Options of the dedup stage (also CLI flags via megatron_dsm.config)."""

    url: bool = field(True, help="drop documents whose normalised URL was seen before")
    exact: bool = field(True, help="drop documents whose normalised text was seen before")
    near: bool = field(True, help="drop near-duplicates found with MinHash LSH")
    threshold: float = field(0.8, help="Jaccard similarity at which a document is a near-duplicate")
    num_perm: int = field(128, help="MinHash permutations")
    shingle_words: int = field(5, help="words per shingle for MinHash")
    seed: int = field(1, help="MinHash seed")

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"dedup threshold must be in (0, 1], got {self.threshold}")
        if self.num_perm < 2:
            raise ConfigError(f"dedup num_perm must be >= 2, got {self.num_perm}")
        if self.shingle_words < 1:
            raise ConfigError(f"dedup shingle_words must be >= 1, got {self.shingle_words}")


def normalize_url(url: str) -> str:
    """Canonical form of ``url`` for the exact URL check (see module doc)."""
    url = url.strip()
    try:
        p = urlsplit(url)
    except ValueError:
        return url
    scheme, host = p.scheme.lower(), (p.hostname or "").lower()
    port = p.port if p.port not in (None, 80, 443) else None
    netloc = host + (f":{port}" if port else "")
    path = p.path.rstrip("/") or ""
    return urlunsplit((scheme, netloc, path, p.query, ""))


def normalize_text(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip()


def text_key(text: str) -> bytes:
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest()


def shingles(text: str, k: int) -> set[bytes]:
    words = _WORD.findall(text.casefold())
    if len(words) <= k:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i:i + k]).encode("utf-8") for i in range(len(words) - k + 1)}


class Deduplicator:
    """Pure-Python core: ``check`` says why a document is a duplicate, or None."""

    def __init__(self, cfg: DedupConfig | None = None):
        from datasketch import MinHashLSH

        self.cfg = cfg or DedupConfig()
        self.urls: set[str] = set()
        self.texts: set[bytes] = set()
        self.lsh = None
        if self.cfg.near:
            try:
                self.lsh = MinHashLSH(threshold=self.cfg.threshold, num_perm=self.cfg.num_perm)
            except ValueError as e:  # e.g. a threshold too close to 1 for num_perm
                raise ConfigError(f"dedup: no LSH banding for threshold={self.cfg.threshold}, "
                                  f"num_perm={self.cfg.num_perm} ({e}); raise num_perm or lower the threshold") from None
        self.minhashes: dict[str, object] = {}
        self.counts = {"documents": 0, "kept": 0, "url": 0, "exact": 0, "near": 0}

    def minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.cfg.num_perm, seed=self.cfg.seed)
        sh = shingles(text, self.cfg.shingle_words)
        if sh:
            m.update_batch(list(sh))
        return m

    def check(self, text: str, url: str | None = None) -> str | None:
        """Register the document; return "url", "exact" or "near" if it duplicates an earlier one."""
        self.counts["documents"] += 1
        reason = self._check(text, url)
        self.counts[reason or "kept"] += 1
        return reason

    def _check(self, text: str, url: str | None) -> str | None:
        if self.cfg.url and url:
            u = normalize_url(url)
            if u in self.urls:
                return "url"
            self.urls.add(u)
        if self.cfg.exact:
            k = text_key(text)
            if k in self.texts:
                return "exact"
            self.texts.add(k)
        if self.lsh is not None:
            m = self.minhash(text)
            for key in self.lsh.query(m):
                if self.minhashes[key].jaccard(m) >= self.cfg.threshold:
                    return "near"
            key = str(len(self.minhashes))
            self.lsh.insert(key, m)
            self.minhashes[key] = m
        return None


class CorpusDedup(PipelineStep):
    """datatrove step: drop URL, exact-text and near duplicates (first copy kept).

    The URL is read from ``doc.metadata["url"]``.  Stats: ``documents``,
    ``kept``, ``dropped_url``, ``dropped_exact``, ``dropped_near``.
    """

    type = "🫂 - DEDUP"
    name = "🔁 url / exact / MinHash near dedup"

    def __init__(self, config: DedupConfig | None = None):
        super().__init__()
        self.config = config or DedupConfig()
        self.core: Deduplicator | None = None

    def run(self, data, rank: int = 0, world_size: int = 1):
        if data is None:
            return
        self.core = Deduplicator(self.config)
        for doc in data:
            self.stat_update("documents")
            reason = self.core.check(doc.text, doc.metadata.get("url"))
            if reason:
                self.stat_update(f"dropped_{reason}")
                continue
            self.stat_update("kept")
            yield doc
