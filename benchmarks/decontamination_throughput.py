#!/usr/bin/env python
"""Decontamination throughput on one core: this project vs datatrove's n-gram filter.

Both run in this process, pinned to one CPU, on the same documents
(``--repeat`` copies of ``shared/data/web/docs.jsonl``, parsed into datatrove
``Document`` objects before any clock starts) against the same benchmark
texts (every indexable text of every benchmark under ``shared/data/benchmarks``,
as loaded by ``megatron_dsm.mining.decontaminate.load_benchmarks``).

* ours: ``BenchmarkDecontamination.run`` (the datatrove step: batches, numpy
  scan, verified hits, segment removal, stats).  Index build timed apart.
* datatrove 0.10.1: ``NGramsDecontFilter.run`` configured as in
  ``shared/bench/datatrove_decont_baseline.sh``: ``n_grams=10``, default
  ``TextNormConfig`` (numbers -> 0), xxhash64, spaCy's blank English
  tokenizer (warmed up before timing).  Its index is made with datatrove's own
  ``simplify_text`` + tokenizer + ``ngrams`` on every benchmark text (the
  indexer step itself needs lighteval, which is not installed here).  With
  xxhash >= 4, which no longer hashes ``str``, the filter's hash function is
  given UTF-8 bytes: the value is the one xxhash 3 returned for the ``str``.

MB/s = UTF-8 bytes of all document texts / 1e6 / timed seconds.  The last
line prints both figures and the ratio, taken on the same documents: every
``--peer-stride``-th one (default 3, so the run stays under two minutes; 1 =
all).  ``--repeat 5 --peer-stride 1`` is the shared harness's input.

    python benchmarks/decontamination_throughput.py [--repeat N] [--peer-stride K] [--cpu K]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

from megatron_dsm.mining import decontaminate as dc  # noqa: E402


def load_docs(path: Path, repeat: int):
    from datatrove.data import Document

    docs = []
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    for r in range(repeat):
        for i, row in enumerate(rows):
            docs.append(Document(text=row["text"], id=f"{row.get('id', i)}#{r}", metadata={}))
    return docs


def mb(docs) -> float:
    return sum(len(d.text.encode("utf-8")) for d in docs) / 1e6


def run_ours(bench_dir: Path, docs, runs: int):
    t0 = time.perf_counter()
    step = dc.BenchmarkDecontamination(bench_dir)
    step.core  # build the index
    t_index = time.perf_counter() - t0
    size = mb(docs)
    times, cpus, kept, dirty = [], [], 0, 0
    for _ in range(runs):
        batch = [copy.copy(d) for d in docs]
        for d in batch:
            d.metadata = {}
        t, c = time.perf_counter(), time.process_time()
        out = list(step.run(iter(batch)))
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        kept = len(out)
        dirty = sum(1 for d in batch if "decontamination" in d.metadata)
    dt = statistics.median(times)
    return {"mb_per_s": size / dt, "seconds": dt, "cpu_mb_per_s": size / statistics.median(cpus), "runs_s": [round(x, 3) for x in times], "index_s": t_index,
            "docs_contaminated": dirty, "docs_kept": kept, "index": step.core.index.summary()}


def _peer_hash(filt):
    import xxhash

    try:
        filt.hash_func("probe")
        return filt.hash_func
    except TypeError:  # xxhash >= 4 wants bytes; xxhash 3 encoded str as UTF-8
        return lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))


def run_datatrove(bench_dir: Path, docs):
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig, ngrams, simplify_text

    cfg = NGramsDecontConfig(n_grams=10, find_query_ngrams=True, find_overlap_ngrams=True,
                             norm_config=TextNormConfig(), hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    filt = NGramsDecontFilter(index_folder=str(bench_dir), config=cfg, language="en")
    filt.hash_func = _peer_hash(filt)
    from datatrove.utils.word_tokenizers import strip_strings

    t0 = time.perf_counter()
    index = {}
    texts = dc.load_benchmarks(bench_dir)
    # spaCy's tokenizer run directly (no sentencizer): the same tokens word_tokenize gives, faster
    nlp = filt.tokenizer.tokenizer
    normed = (simplify_text(t.text, cfg.norm_config) for t in texts)
    for t, doc in zip(texts, nlp.tokenizer.pipe(normed, batch_size=256)):
        toks = strip_strings([tok.text for tok in doc])
        for g in ngrams(toks, cfg.n_grams):
            index.setdefault(filt.hash_func(" ".join(g)), t.benchmark)
    filt._index_hashes = index
    t_index = time.perf_counter() - t0
    filt.tokenizer.word_tokenize("warm up the spaCy pipeline.")
    batch = [copy.copy(d) for d in docs]
    for d in batch:
        d.metadata = {}
    t, c = time.perf_counter(), time.process_time()
    kept = sum(1 for _ in filt.run(iter(batch)))
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    return {"mb_per_s": mb(docs) / dt, "seconds": dt, "cpu_mb_per_s": mb(docs) / cpu, "index_s": t_index, "docs_removed": len(batch) - kept,
            "index_hashes": len(index)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", default=str(SHARED / "web" / "docs.jsonl"), help="jsonl with a text field")
    ap.add_argument("--benchmarks", default=str(SHARED / "benchmarks"), help="benchmarks folder")
    ap.add_argument("--repeat", type=int, default=1, help="copies of --docs (the shared harness uses 5)")
    ap.add_argument("--peer-stride", type=int, default=3,
                    help="datatrove (and the ratio) use every k-th document, 1 = all; ours also runs on all")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of ours (median)")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed)")
    args = ap.parse_args(argv)
    for p, what in ((Path(args.docs), "--docs file"), (Path(args.benchmarks), "--benchmarks folder")):
        if not p.exists():
            print(f"decontamination_throughput: error: {what} not found: {p}", file=sys.stderr)
            return 2
    if args.repeat < 1 or args.runs < 1:
        print("decontamination_throughput: error: --repeat and --runs must be >= 1", file=sys.stderr)
        return 2
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    docs = load_docs(Path(args.docs), args.repeat)
    size = mb(docs)
    print(f"input: {len(docs)} docs, {size:.2f} MB of text ({args.repeat} x {args.docs}); pinned to CPU {cpu}")
    ours = run_ours(Path(args.benchmarks), docs, args.runs)
    idx = ours["index"]
    print(f"ours: index {ours['index_s']:.2f} s ({idx['texts']} texts, {idx['unique_ngrams']} distinct 10-grams, "
          f"{idx['short_texts']} short texts); clean {ours['seconds']:.2f} s (runs {ours['runs_s']}) "
          f"= {ours['mb_per_s']:.2f} MB/s ({ours['cpu_mb_per_s']:.2f} per CPU-second); {ours['docs_contaminated']} docs had segments removed, "
          f"{ours['docs_kept']} kept")
    peer_docs = docs[:: max(1, args.peer_stride)]
    same = run_ours(Path(args.benchmarks), peer_docs, args.runs) if len(peer_docs) < len(docs) else ours
    peer = run_datatrove(Path(args.benchmarks), peer_docs)
    print(f"on the datatrove subset ({len(peer_docs)} docs, {mb(peer_docs):.2f} MB): ours {same['seconds']:.2f} s "
          f"= {same['mb_per_s']:.2f} MB/s, {same['docs_contaminated']} docs with segments removed")
    print(f"datatrove: index {peer['index_s']:.2f} s ({peer['index_hashes']} hashes); filter {peer['seconds']:.2f} s "
          f"= {peer['mb_per_s']:.3f} MB/s; {peer['docs_removed']} docs removed")
    # wall-clock MB/s is the key figure; per CPU-second figures show what a core does
    # when the machine is shared (both processes' CPU time on the pinned core)
    ratio = same["mb_per_s"] / peer["mb_per_s"]
    print(f"decontamination_throughput ours_mb_per_s={same['mb_per_s']:.2f} "
          f"datatrove_mb_per_s={peer['mb_per_s']:.3f} ratio={ratio:.1f}x "
          f"(per CPU-second: ours {same['cpu_mb_per_s']:.2f}, datatrove {peer['cpu_mb_per_s']:.3f}, "
          f"ratio {same['cpu_mb_per_s'] / peer['cpu_mb_per_s']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
