"""Page deduplication before recall: URL, exact text and MinHash near-duplicates.

The paper URL-deduplicates and near-deduplicates Common Crawl first and runs
the fastText recall over what is left.  Three checks run in this order, each
on the pages the previous one kept; a page is removed by the first that fires:

* ``url``: the same normalised URL (scheme and host lower-cased, default port,
  ``#fragment`` and a trailing ``/`` dropped; query kept, since ``?id=`` often
  selects the page).  Pages without a URL are never URL duplicates.
* ``exact``: the same normalised text: case-folded, runs of whitespace
  collapsed, ends stripped; punctuation is *kept* because in mathematics
  ``x+y`` and ``x-y`` are different pages.
* ``near``: MinHash over word ``shingle_words``-grams with LSH banding.

Two methods behind the same :class:`DedupConfig`:

``stages`` (default, any corpus size): datatrove's multi-stage steps, each a
sharded, resumable job (datatrove's completion marker per task; a rerun skips
finished tasks), local or Slurm executor: ``ExactDedupSignature`` ->
``ExactFindDedups`` -> ``ExactDedupFilter`` for URL and exact text, then
``MinhashDedupSignature`` -> ``MinhashDedupBuckets`` -> ``MinhashDedupCluster``
-> ``MinhashDedupFilter``.  datatrove keeps, per duplicate group, a copy chosen
by *position* (task rank, index in the task's stream).  To make that choice
independent of the task count, the pages are laid out in input order (one
page file per input file, see :mod:`readers`) and each task gets a
contiguous block of page files, so (rank, index) order is input order for
any number of tasks: the exact checks keep the first copy in input order
(priority by rank, then index), and MinHash's union-find sees the same pair
sequence and keeps the same page.  MinHash candidates are not re-checked for
their Jaccard similarity (datatrove's design): with ``b`` bands of ``r``
hashes a pair of similarity ``s`` is caught with probability
``1 - (1 - s^r)^b`` (14 x 8: 0.92 at 0.8, 0.05 at 0.5).  Text is normalised
as datatrove does (lower case, punctuation and accents removed, spaCy
English word split) except that numbers are kept: two exercises that differ
only in their numbers are different pages.  A page with fewer words than a
shingle gets no signature and is never a near duplicate.

``memory`` (small inputs and tests): :class:`Deduplicator` in one process, one
task, the first copy in input order kept; near duplicates through datasketch's
MinHash LSH at Jaccard ``near_threshold``, each LSH candidate confirmed by its
MinHash estimate of the Jaccard similarity.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.io import atomic_write, write_json
from megatron_dsm.mining.pipeline import ExecutorConfig, jsonl_reader, jsonl_writer, run_stage, stage_stats

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
METHODS = ("stages", "memory")
CHECKS = ("url", "exact", "near")
MAX_TASKS = 65534  # the exact checks' priority (65535 - rank) must stay in datatrove's [1, 65535]


@options
class DedupConfig:
    """Options of the dedup stage (CLI flags via megatron_dsm.config; YAML section ``dedup:``)."""

    method: str = field("stages", flag="--dedup-method", choices=METHODS,
                        help="stages: datatrove's multi-stage URL/exact/MinHash steps, sharded and resumable "
                             "(any corpus size); memory: one in-process index, one task (small inputs, tests)")
    url: bool = field(True, flag="--dedup-url", help="drop pages whose normalised URL was seen before")
    exact: bool = field(True, flag="--dedup-exact", help="drop pages whose normalised text was seen before")
    near: bool = field(True, flag="--dedup-near", help="drop MinHash near-duplicates")
    shingle_words: int = field(5, help="words per MinHash shingle")
    minhash_seed: int = field(1, help="MinHash seed")
    minhash_buckets: int = field(14, help="stages: LSH bands (datatrove buckets)")
    minhash_hashes_per_bucket: int = field(8, help="stages: hashes per band; catch probability of a pair of "
                                                   "Jaccard s is 1 - (1 - s^r)^b")
    minhash_bucket_workers: int = field(1, help="stages: tasks per band in the bucket stage")
    cluster_mem_gb: int = field(0, help="stages, Slurm: memory of the one-task clustering stage "
                                        "(0: the executor's --slurm-mem-per-cpu-gb)")
    near_threshold: float = field(0.8, help="memory: Jaccard similarity at which a page is a near-duplicate")
    minhash_perm: int = field(128, help="memory: MinHash permutations")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"dedup method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.near_threshold <= 1.0:
            raise ConfigError(f"dedup near_threshold must be in (0, 1], got {self.near_threshold}")
        if self.minhash_perm < 2:
            raise ConfigError(f"dedup minhash_perm must be >= 2, got {self.minhash_perm}")
        for name in ("shingle_words", "minhash_buckets", "minhash_hashes_per_bucket", "minhash_bucket_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dedup {name} must be >= 1, got {getattr(self, name)}")

    @property
    def checks(self) -> list[str]:
        return [c for c in CHECKS if getattr(self, c)]

    def minhash(self) -> MinhashConfig:
        # sha1: datatrove's default xxhash is handed str shingles, which xxhash 4.x refuses
        return MinhashConfig(n_grams=self.shingle_words, num_buckets=self.minhash_buckets,
                             hashes_per_bucket=self.minhash_hashes_per_bucket, seed=self.minhash_seed,
                             norm_config=TextNormConfig(norm_numbers=False), hash_config=HashConfig(hash_fc="sha1"))


# --------------------------------------------------------------------------
# normalisation (both methods)


def normalize_url(url: str) -> str:
    """Canonical form of ``url`` for the URL check (see module doc)."""
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


# --------------------------------------------------------------------------
# method "memory"


class Deduplicator:
    """In-memory core: ``check`` says why a document is a duplicate, or None."""

    def __init__(self, cfg: DedupConfig | None = None):
        from datasketch import MinHashLSH  # only this method needs datasketch

        self.cfg = cfg or DedupConfig(method="memory")
        self.urls: set[str] = set()
        self.texts: set[bytes] = set()
        self.lsh = None
        if self.cfg.near:
            try:
                self.lsh = MinHashLSH(threshold=self.cfg.near_threshold, num_perm=self.cfg.minhash_perm)
            except ValueError as e:  # e.g. a threshold too close to 1 for num_perm
                raise ConfigError(f"dedup: no LSH banding for near_threshold={self.cfg.near_threshold}, "
                                  f"minhash_perm={self.cfg.minhash_perm} ({e}); raise minhash_perm or lower the "
                                  f"threshold") from None
        self.minhashes: dict[str, object] = {}
        self.counts = {"documents": 0, "kept": 0, "url": 0, "exact": 0, "near": 0}

    def minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.cfg.minhash_perm, seed=self.cfg.minhash_seed)
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
                if self.minhashes[key].jaccard(m) >= self.cfg.near_threshold:
                    return "near"
            key = str(len(self.minhashes))
            self.lsh.insert(key, m)
            self.minhashes[key] = m
        return None


class CorpusDedup(PipelineStep):
    """datatrove step around :class:`Deduplicator` (one task: its state is in memory).

    The URL is read from ``doc.metadata["url"]``.  Stats: ``documents``,
    ``kept``, ``dropped_url``, ``dropped_exact``, ``dropped_near``.
    """

    type = "🫂 - DEDUP"
    name = "🔁 url / exact / MinHash near dedup (in memory)"

    def __init__(self, config: DedupConfig | None = None):
        super().__init__()
        self.config = config or DedupConfig(method="memory")
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


# --------------------------------------------------------------------------
# method "stages": datatrove's multi-stage steps


# bytes, not str: datatrove hashes with xxhash, whose 4.x releases refuse str
def url_content(doc) -> bytes:
    return normalize_url(doc.metadata["url"]).encode("utf-8")


def text_content(doc) -> bytes:
    return normalize_text(doc.text).encode("utf-8")


def rank_priority(doc) -> int:
    """datatrove keeps the highest priority of an exact group, then the lowest index: lower ranks first."""
    return 65535 - doc.metadata["dedup_rank"]


class StampRank(PipelineStep):
    """Records the task rank on each page for :func:`rank_priority` (signature stages only; never written)."""

    type = "🫂 - DEDUP"
    name = "rank for the keep priority"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.metadata["dedup_rank"] = rank
            yield doc


class UrlDedupSignature(ExactDedupSignature):
    """datatrove's exact-dedup signature of the normalised URL; pages without a URL get none."""

    name = "💥 URL dedup stage 1"

    def get_hashes(self, doc, doc_idx):
        return super().get_hashes(doc, doc_idx) if doc.metadata.get("url") else []


class DropMetadata(PipelineStep):
    """Removes ExactDedupFilter's ``duplicate_count``: two exact checks in a row overwrite each other's."""

    type = "🫂 - DEDUP"
    name = "drop dedup bookkeeping"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.metadata.pop("duplicate_count", None)
            yield doc


def contiguous_order(files: list[str], tasks: int) -> list[str]:
    """``files`` reordered so that datatrove's strided sharding (task r reads entries r, r + tasks, ...)
    hands task r the r-th contiguous block of ``files``."""
    base, extra = divmod(len(files), tasks)
    blocks, start = [], 0
    for r in range(tasks):
        n = base + (r < extra)
        blocks.append(files[start:start + n])
        start += n
    return [blocks[r][i] for i in range(base + (extra > 0)) for r in range(tasks) if i < len(blocks[r])]


def _exact_config(check: str) -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=url_content if check == "url" else text_content,
                            document_priority=rank_priority)


class StagesDedup:
    """Runs the enabled checks as datatrove stages over ``pages`` into ``out``; ``work`` keeps the signatures,
    duplicate lists and clusters (resumable; remove it with ``out`` to start over)."""

    def __init__(self, cfg: DedupConfig, ex_cfg: ExecutorConfig, pages: Path, out: Path, work: Path, logs: Path):
        self.cfg, self.ex_cfg = cfg, ex_cfg
        self.pages, self.out, self.work, self.logs = Path(pages), Path(out), Path(work), Path(logs)
        files = sorted(p.name for p in self.pages.glob("*.jsonl*"))
        if not files:
            raise ConfigError(f"dedup: no page files (*.jsonl*) in {self.pages}")
        self.tasks = min(ex_cfg.tasks, len(files))
        self.checks = cfg.checks
        if self.tasks > MAX_TASKS:
            raise ConfigError(f"dedup: at most {MAX_TASKS} tasks, got {self.tasks}")
        path = self.work / "layout.json"
        if self.out.is_dir() and path.is_file():  # finished: reused as it is, whatever the options now
            done = json.loads(path.read_text())
            self.tasks, self.checks = done["tasks"], done["checks"]
        else:
            self._check_layout(files, path)

    def _check_layout(self, files: list[str], path: Path) -> None:
        """Indices in signatures are positions in a task's stream: a rerun must shard the pages alike."""
        layout = {"tasks": self.tasks, "files": files, "checks": self.checks,
                  "minhash": str(self.cfg.minhash())}
        if path.is_file():
            old = json.loads(path.read_text())
            if old != layout:
                diff = [k for k in layout if old.get(k) != layout[k]]
                raise ConfigError(f"dedup: {self.work} was started with other {', '.join(diff)} "
                                  f"(tasks {old.get('tasks')}); rerun with those settings, or delete {self.work} "
                                  f"and {self.out} to start over")
        else:
            write_json(path, layout)
        atomic_write(self.work / "order.txt", "".join(f + "\n" for f in contiguous_order(files, self.tasks)))

    def reader(self):
        return jsonl_reader(self.pages, paths_file=str(self.work / "order.txt"))

    def _stage(self, name: str, out: Path, build, tasks: int, mem: int | None = None) -> Path:
        return run_stage(f"dedup_{name}", out, build, self.logs, self.ex_cfg, tasks=tasks, mem_per_cpu_gb=mem)

    def run(self) -> dict:
        if self.out.is_dir():
            return self.counts()
        filters: list = []  # factories of the filters of the checks done so far, in order
        w = self.work
        for check in ("url", "exact"):
            if not getattr(self.cfg, check):
                continue
            sig_cls = UrlDedupSignature if check == "url" else ExactDedupSignature
            prior = list(filters)
            self._stage(f"{check}_signatures", w / f"{check}_sigs", lambda o, c=check, s=sig_cls, p=prior: [
                self.reader(), *[f() for f in p], StampRank(), s(str(o), _exact_config(c), finder_workers=self.tasks)],
                self.tasks)
            self._stage(f"{check}_find", w / f"{check}_dups", lambda o, c=check: [
                ExactFindDedups(str(w / f"{c}_sigs"), str(o), _exact_config(c))], self.tasks)
            filters.append(lambda c=check: ExactDedupFilter(str(w / f"{c}_dups"), _exact_config(c)))
        if self.cfg.near:
            mh, prior = self.cfg.minhash(), list(filters)
            self._stage("near_signatures", w / "near_sigs", lambda o: [
                self.reader(), *[f() for f in prior], MinhashDedupSignature(str(o), config=mh)], self.tasks)
            self._stage("near_buckets", w / "near_buckets", lambda o: [
                MinhashDedupBuckets(str(w / "near_sigs"), str(o), config=mh)],
                self.cfg.minhash_buckets * self.cfg.minhash_bucket_workers)
            self._stage("near_clusters", w / "near_clusters", lambda o: [
                MinhashDedupCluster(str(w / "near_buckets"), str(o), config=mh)], 1, self.cfg.cluster_mem_gb or None)
            filters.append(lambda: MinhashDedupFilter(str(w / "near_clusters")))
        self._stage("filter", self.out, lambda o: [
            self.reader(), *[f() for f in filters], DropMetadata(),
            jsonl_writer(o, self.ex_cfg.compression, name="${page_shard}")], self.tasks)
        return self.counts()

    def counts(self) -> dict:
        """What each check removed, from the filter stage's per-task stats (reader, filters..., writer)."""
        steps = stage_stats(self.logs / "dedup_filter")
        checks = self.checks
        removed = {c: int(steps[1 + i].get("dropped", 0)) for i, c in enumerate(checks)}
        return {"method": "stages", "tasks": self.tasks, "pages_in": int(steps[0].get("documents", 0)),
                "removed": {c: removed.get(c, 0) for c in CHECKS}, "pages_out": int(steps[-1].get("total", 0)),
                "checks": checks, "minhash": _minhash_summary(self.cfg)}


def _minhash_summary(cfg: DedupConfig) -> dict:
    b, r = cfg.minhash_buckets, cfg.minhash_hashes_per_bucket
    return {"shingle_words": cfg.shingle_words, "bands": b, "hashes_per_band": r,
            "threshold_approx": round((1 / b) ** (1 / r), 3)} if cfg.method == "stages" else {
        "shingle_words": cfg.shingle_words, "permutations": cfg.minhash_perm, "threshold": cfg.near_threshold}


def run_dedup(cfg: DedupConfig, ex_cfg: ExecutorConfig, pages: Path, out: Path, work: Path, logs: Path) -> dict:
    """Deduplicate the page files of ``pages`` into ``out`` (same file names); returns the counts."""
    if cfg.method == "stages":
        return StagesDedup(cfg, ex_cfg, pages, out, work, logs).run()
    run_stage("dedup_memory", out, lambda o: [
        jsonl_reader(pages), CorpusDedup(cfg), jsonl_writer(o, ex_cfg.compression, name="${page_shard}")],
        logs, ex_cfg, tasks=1)
    st = stage_stats(Path(logs) / "dedup_memory")[1]
    return {"method": "memory", "tasks": 1, "pages_in": int(st.get("documents", 0)),
            "removed": {c: int(st.get(f"dropped_{c}", 0)) for c in CHECKS}, "pages_out": int(st.get("kept", 0)),
            "checks": cfg.checks, "minhash": _minhash_summary(cfg)}
