#!/usr/bin/env python
"""Mining throughput per core, stage by stage: the project's pipeline vs datatrove's stock steps, same input.

Input: the HTML pages of the shared WARC files (../shared/data/web/warc, 42
pages, 43 KB of HTML each on average), repeated ``--html-copies`` times, and
the page texts of ../shared/data/web/docs.jsonl plus those WARC pages,
repeated ``--text-copies`` times (each repeat with its words shuffled, so it
is a new page; one page in ten also gets a near copy, one word changed, under
another URL, so the MinHash stages of both sides see the same pages and have
clusters to resolve).

Stages, each timed in this process on one core (CPU seconds of the process
and of the children it waited for, so a stock step that works in a helper
process is charged for it):

* html->text: ``ExtractText`` (math kept, no language id) vs datatrove's
  ``Trafilatura`` extractor step (its per-page sandbox process included);
* language id: py3langid, as ``ExtractText`` runs it (datatrove's
  ``LanguageFilter`` downloads its fastText model: not run offline);
* scoring: ``ScorePages`` (fastText at the paper's settings, token counts of
  the pages above the threshold in the default byte tokenizer) vs datatrove's
  ``FastTextClassifierFilter`` with the same model file (when its ``fasteners``
  dependency is installed; the ratio line names the steps it covers);
  token counting in a BPE (GPT-NeoX) is timed on its own, per counted page;
* dedup: each of the project's stages (URL and exact: signatures, find;
  MinHash: signatures, buckets, clusters; one filter+write) vs datatrove's
  stock MinHash (signatures, buckets, cluster, filter+write) at its default
  settings, one task each.  Both hash shingles with SHA-1: datatrove's
  default xxhash is given str shingles, which xxhash 4.x refuses.

The memory of the one stage that cannot be sharded, datatrove's MinHash
clustering (a union-find over every page that has a near duplicate, in one
task), is measured with tracemalloc on ``--cluster-pairs`` synthetic pairs.

The projection multiplies per-page costs by ``--snapshot-pages`` (assumed
3.0e9: a Common Crawl snapshot holds roughly 2.5 to 3.5 billion pages) as if
every stage ran on every page (an upper bound: dedup removes pages before
scoring) with pages the size of these.  The last line is the ratio of
pages per core-second, ours over datatrove's, over the steps both have
(html->text, scoring, MinHash near-dedup) chained.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import tracemalloc
from pathlib import Path

WORK = tempfile.mkdtemp(prefix="dsm_mining_bench_")
atexit.register(shutil.rmtree, WORK, True)
# FastTextClassifierFilter copies its model into huggingface_hub's assets cache, read at import time
os.environ["HF_ASSETS_CACHE"] = os.path.join(WORK, "hf_assets")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datatrove.data import Document  # noqa: E402
from datatrove.executor.local import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.dedup import (  # noqa: E402
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.extractors import Trafilatura  # noqa: E402
from datatrove.pipeline.filters import FastTextClassifierFilter  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402
from datatrove.utils.hashing import HashConfig  # noqa: E402
from datatrove.utils.typeshelper import Languages  # noqa: E402
from datatrove.utils.word_tokenizers import load_word_tokenizer  # noqa: E402

from megatron_dsm.mining.classifier import ClassifierConfig, train  # noqa: E402
from megatron_dsm.mining.dedup import DedupConfig, StagesDedup  # noqa: E402
from megatron_dsm.mining.html_to_text import detect_language  # noqa: E402
from megatron_dsm.mining.pipeline import ExecutorConfig, ExtractText, ScorePages  # noqa: E402
from megatron_dsm.mining.readers import WarcPageReader  # noqa: E402
from megatron_dsm.mining.recall import TokenCounting  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    c = cpu_seconds()
    out = fn()
    return out, cpu_seconds() - c


def drain(step, docs) -> int:
    return sum(1 for _ in step.run(iter(docs)))


def copies(docs: list[Document]) -> list[Document]:
    return [Document(text=d.text, id=d.id, metadata=dict(d.metadata)) for d in docs]


def load_inputs(html_copies: int, text_copies: int, max_texts: int) -> tuple[list[Document], list[dict]]:
    warc = [d for d in WarcPageReader(str(SHARED / "web" / "warc"), glob_pattern="*.warc.gz").run()
            if d.metadata.get("format") == "html"]
    html = [Document(text=d.text, id=f"{d.id}#{k}", metadata={"url": d.metadata.get("url"), "format": "html"})
            for k in range(html_copies) for d in warc]
    base = [{"id": r["id"], "url": r.get("url"), "text": r["text"]} for r in map(json.loads, open(SHARED / "web" /
                                                                                                  "docs.jsonl"))]
    base += [{"id": d.id, "url": d.metadata.get("url"), "text": d.text}
             for d in ExtractText(detect_language=False).run(iter(copies(html[:len(warc)])))]
    base = base[-max_texts:] if max_texts else base  # the WARC pages last: a small run keeps them
    texts, rng = [], random.Random(0)
    for k in range(text_copies):
        for i, r in enumerate(base):
            words = r["text"].split()
            if k:
                rng.shuffle(words)
            url = r["url"] or f"https://nourl.example/{r['id']}"
            row = {"id": f"{r['id']}#{k}", "url": f"{url}{'&' if '?' in url else '?'}copy={k}",
                   "text": " ".join(words)}
            texts.append(row)
            if i % 10 == 0 and len(words) > 20:  # a near copy (one word changed) under another URL: the URL and
                words[len(words) // 2] = "changed"  # exact checks pass it, both MinHash runs see the same pages
                texts.append({"id": row["id"] + "#near", "url": row["url"] + "&near", "text": " ".join(words)})
    return html, texts


def write_pages(folder: Path, texts: list[dict], files: int = 4) -> None:
    folder.mkdir(parents=True)
    for f in range(files):
        with open(folder / f"{f:08d}.jsonl", "w") as out:
            out.writelines(json.dumps({**r, "page_shard": f"{f:08d}"}) + "\n" for r in texts[f::files])


class TimedStages(StagesDedup):
    """The project's dedup with each stage's CPU seconds recorded."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seconds: dict[str, float] = {}

    def _stage(self, name, out, build, tasks, mem=None):
        res, self.seconds[name] = timed(lambda: super(TimedStages, self)._stage(name, out, build, tasks, mem))
        return res


def stock_minhash(pages: Path, work: Path) -> dict[str, float]:
    cfg = MinhashConfig(hash_config=HashConfig(hash_fc="sha1"))
    stages = {
        "signatures": ([JsonlReader(str(pages)), MinhashDedupSignature(str(work / "sigs"), config=cfg)], 1),
        "buckets": ([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)], cfg.num_buckets),
        "cluster": ([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)], 1),
        "filter": ([JsonlReader(str(pages)), MinhashDedupFilter(str(work / "remove")),
                    JsonlWriter(str(work / "out"))], 1),
    }
    return {name: timed(lambda p=p, t=t, n=name: LocalPipelineExecutor(
        p, tasks=t, workers=1, logging_dir=str(work / "logs" / n)).run())[1] for name, (p, t) in stages.items()}


def cluster_memory(pairs: int, work: Path) -> tuple[int, float]:
    """Peak Python memory of datatrove's one-task MinHash clustering over ``pairs`` duplicate pairs of distinct
    pages (pairs written as its bucket stage writes them): (pages in clusters, bytes per such page)."""
    cfg = MinhashConfig()
    (work / "pairs").mkdir(parents=True)
    for b in range(cfg.num_buckets):  # every pair found in every band, as exact copies are
        with open(work / "pairs" / f"{b:05d}_00.dups", "wb") as f:
            f.write(struct.pack(f"<{4 * pairs}I", *(v for i in range(pairs) for v in (0, 2 * i, 1, 2 * i + 1))))
    step = MinhashDedupCluster(str(work / "pairs"), str(work / "clusters"), config=cfg)
    tracemalloc.start()
    step.run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return 2 * pairs, peak / (2 * pairs)


def rate(n: int, s: float) -> float:
    return n / s if s > 0 else float("inf")


Row = tuple[str, int, float, "float | None"]  # stage, pages, ours CPU s, datatrove CPU s (None: not run)
NEAR = "MinHash near-dedup, all stages"


def extraction_rows(html: list[Document], texts: list[dict]) -> list[Row]:
    ours = timed(lambda: drain(ExtractText(detect_language=False), copies(html)))[1]
    stock = timed(lambda: drain(Trafilatura(), copies(html)))[1]
    detect_language("warm-up: the model loads once per process")
    return [("html->text", len(html), ours, stock),
            ("language id", len(texts), timed(lambda: [detect_language(r["text"]) for r in texts])[1], None)]


def scoring_rows(texts: list[dict], work: Path, bucket: int, max_per_class: int) -> list[Row]:
    docs = [Document(text=r["text"], id=r["id"], metadata={"url": r["url"]}) for r in texts]
    web = [json.loads(x) for x in open(SHARED / "web" / "docs.jsonl")]
    clf = train([r["text"] for r in web if r["label"] == "math"], [r["text"] for r in web if r["label"] == "non_math"],
                ClassifierConfig(bucket=bucket, max_per_class=max_per_class))
    model = work / "math.bin"
    clf.save(model)
    score = ScorePages(str(model), index_folder=str(work / "index"), counting=TokenCounting(min_score=0.5))
    ours = timed(lambda: drain(score, copies(docs)))[1]
    stock = None
    if importlib.util.find_spec("fasteners"):  # the stock filter's model cache locks files with it
        stock = timed(lambda: drain(FastTextClassifierFilter(str(model), keep_labels=("math", 0.5)),
                                    copies(docs)))[1]
    else:
        print("scoring: datatrove's FastTextClassifierFilter needs the `fasteners` package (not installed here); "
              "only ours is timed")
    counting = TokenCounting("HuggingFaceTokenizer", str(SHARED / "tokenizers" / "olmo_gpt-neox-20b_bytelevel_bpe"))
    counting.tokenizer()
    return [("scoring", len(texts), ours, stock),
            ("token count (BPE)", len(texts), timed(lambda: counting.count([r["text"] for r in texts]))[1], None)]


def dedup_rows(texts: list[dict], work: Path) -> tuple[list[Row], dict, dict]:
    write_pages(work / "pages", texts)
    # both MinHash signature stages split words with spaCy, whose model loads once per process
    load_word_tokenizer(Languages.english).word_tokenize("warm-up")
    dd = TimedStages(DedupConfig(), ExecutorConfig(tasks=1, compression="none"), work / "pages", work / "deduped",
                     work / "dedup", work / "logs")
    counts = dd.run()
    rows: list[Row] = [(f"dedup {name}", len(texts), s, None) for name, s in dd.seconds.items()]
    stock = stock_minhash(work / "pages", work / "stock")
    ours_near = sum(s for k, s in dd.seconds.items() if k.startswith("near_") or k == "filter")
    rows.append((NEAR, len(texts), ours_near, sum(stock.values())))
    return rows, counts, stock


def report(rows: list[Row], stock_mh: dict, snapshot_pages: float, cluster_pairs: int, work: Path) -> None:
    print(f"{'stage':34s} {'pages':>7s} {'ours p/s/core':>14s} {'datatrove p/s/core':>19s} {'ours/datatrove':>15s}")
    for name, n, o, s in rows:
        st = f"{rate(n, s):19.1f}" if s is not None else f"{'-':>19s}"
        ratio = f"{s / o:15.2f}" if s is not None and o > 0 else f"{'-':>15s}"
        print(f"{name:34s} {n:7d} {rate(n, o):14.1f} {st} {ratio}")
    print("datatrove stock MinHash stages (CPU s): " + ", ".join(f"{k} {v:.2f}" for k, v in stock_mh.items()))
    nodes, per_node = cluster_memory(cluster_pairs, work / "cluster_memory")
    print(f"MinHash clustering (one task): peak {per_node:.0f} bytes of Python memory per page that has a near "
          f"duplicate ({nodes:,} such pages)")
    # every stage of ours that runs on every page (token counting runs on candidates only; the NEAR row
    # repeats stages listed one by one)
    per_page = sum(o / n for name, n, o, _ in rows if name not in ("token count (BPE)", NEAR))
    hours = snapshot_pages * per_page / 3600
    print(f"projection: {per_page * 1e3:.2f} CPU ms per page over html->text, language id, scoring and every dedup "
          f"stage -> {hours / snapshot_pages * 1e9:,.0f} core-hours per billion pages, {hours:,.0f} core-hours "
          f"for one Common Crawl snapshot of {snapshot_pages:.2g} pages (assumed; every stage on every page)")
    both = [(name, n, o, s) for name, n, o, s in rows if s is not None]
    ours_chain = 1 / sum(o / n for _, n, o, _ in both)
    stock_chain = 1 / sum(s / n for _, n, _, s in both)
    steps = " + ".join(name.split(",")[0] for name, *_ in both)
    print(f"ratio ours/datatrove pages per core-second ({steps}): {ours_chain / stock_chain:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--html-copies", type=int, default=10, help="repeats of the 42 WARC HTML pages")
    ap.add_argument("--text-copies", type=int, default=2, help="repeats (word-shuffled) of the ~2,950 page texts")
    ap.add_argument("--max-texts", type=int, default=0, help="use only this many page texts (0: all)")
    ap.add_argument("--snapshot-pages", type=float, default=3.0e9, help="pages in one Common Crawl snapshot")
    ap.add_argument("--bucket", type=int, default=200_000, help="fastText hash buckets of the classifier")
    ap.add_argument("--max-per-class", type=int, default=500_000, help="classifier training pages per class")
    ap.add_argument("--cluster-pairs", type=int, default=200_000, help="duplicate pairs for the clustering "
                                                                        "memory measurement")
    args = ap.parse_args()
    if not (SHARED / "web" / "docs.jsonl").is_file():
        print(f"mining_throughput.py: error: shared data not found: {SHARED / 'web'}", file=sys.stderr)
        return 2
    work = Path(WORK)  # the table goes to stdout; datatrove logs its tasks on stderr
    html, texts = load_inputs(args.html_copies, args.text_copies, args.max_texts)
    rows = extraction_rows(html, texts) + scoring_rows(texts, work, args.bucket, args.max_per_class)
    dd, counts, stock_mh = dedup_rows(texts, work)
    print(f"input: {len(html)} HTML pages ({sum(len(d.text) for d in html) / len(html) / 1024:.1f} KB each), "
          f"{len(texts)} page texts ({sum(len(r['text']) for r in texts) / len(texts):.0f} characters each); "
          f"dedup removed {counts['removed']}")
    report(rows + dd, stock_mh, args.snapshot_pages, args.cluster_pairs, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
