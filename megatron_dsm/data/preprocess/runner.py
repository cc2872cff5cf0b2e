"""The whole tool: partitions tokenized in parallel, shards concatenated in
order, sidecars and the rejects file written, and the summary it prints."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from megatron_dsm.data import indexed
from megatron_dsm.data.preprocess.config import PreprocessConfig
from megatron_dsm.data.preprocess.encode import process_partition
from megatron_dsm.data.preprocess.inputs import discover_inputs, plan_partitions
from megatron_dsm.data.preprocess.sentences import build_splitter
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.io import write_jsonl


def _partition_entry(args):
    cfg, units, base, threads, splitter, position = args
    return process_partition(cfg, units, base, threads, splitter, position)


def run(cfg: PreprocessConfig) -> dict:
    """Run the whole tool; returns a summary dict (``ok`` False when nothing was valid)."""
    t0 = time.time()
    files = discover_inputs(cfg.input)
    # fail on a bad tokenizer before any work
    tok = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    if cfg.append_eod and tok.eod is None:
        raise ValueError(f"--append-eod: tokenizer {cfg.tokenizer_model} defines no end-of-document token")
    Path(cfg.output_prefix).parent.mkdir(parents=True, exist_ok=True)
    splitter = build_splitter(cfg, files)
    plan = plan_partitions(files, cfg.partitions)
    results, shard_bases = _tokenize_partitions(cfg, plan, splitter, tok)
    order = {str(f): i for i, f in enumerate(files)}
    rejects = sorted((r for res in results for r in res["rejects"]), key=lambda r: (order[r["file"]], r["line"]))
    counter: Counter = Counter()
    for res in results:
        counter.update(res["counter"])
    ok = counter["documents"] > 0
    if len(plan) > 1:
        _concatenate_shards(cfg, shard_bases, tok, ok)
    outputs = _write_sidecars(cfg, tok, files, counter) if ok else []
    rej_path = f"{cfg.output_prefix}.rejects.jsonl"
    write_jsonl(rej_path, rejects)
    elapsed = time.time() - t0
    return {"ok": ok, "documents": int(counter["documents"]), "tokens": int(counter["tokens"]),
            "rejected": int(counter["rejected"]), "reasons": _reason_counts(rejects),
            "input_bytes": int(counter["input_bytes"]), "seconds": elapsed,
            "tokens_per_s": counter["tokens"] / max(elapsed, 1e-9), "outputs": outputs,
            "rejects_file": rej_path, "partitions": len(plan)}


def _tokenize_partitions(cfg: PreprocessConfig, plan, splitter, tok) -> tuple[list[dict], list[str]]:
    """One partition in this process; several in spawned processes, each
    writing its own shard.  Returns their results and shard prefixes."""
    threads_each = max(1, cfg.workers // max(1, len(plan)))
    if len(plan) == 1:
        return ([process_partition(cfg, plan[0], cfg.output_prefix, threads_each, splitter, tok=tok)],
                [cfg.output_prefix])
    shard_bases = [f"{cfg.output_prefix}.part{i:04d}" for i in range(len(plan))]
    jobs = [(cfg, units, base, threads_each, splitter, i) for i, (units, base) in enumerate(zip(plan, shard_bases))]
    with mp.get_context("spawn").Pool(len(plan)) as pool:
        return pool.map(_partition_entry, jobs), shard_bases


def _concatenate_shards(cfg: PreprocessConfig, shard_bases: list[str], tok, ok: bool) -> None:
    """Concatenate the partitions' shards in order (when any document was
    valid) and remove them."""
    for k in cfg.json_keys:
        final = cfg.key_prefix(k)
        shards = [cfg.key_prefix(k, b) for b in shard_bases if os.path.isfile(cfg.key_prefix(k, b) + ".idx")]
        if ok:
            dtype = indexed.optimal_dtype(tok.vocab_size)
            with indexed.IndexedDatasetWriter(final, dtype) as w:
                for s in shards:
                    w.add_dataset(s)
        for s in shards:
            for suffix in (".bin", ".idx"):
                if os.path.exists(s + suffix):
                    os.remove(s + suffix)


def _write_sidecars(cfg: PreprocessConfig, tok, files, counter: Counter) -> list[str]:
    """``PREFIX.json`` beside each key's dataset; returns the dataset prefixes."""
    outputs = []
    for k in cfg.json_keys:
        final = cfg.key_prefix(k)
        docs, tokens = indexed.dataset_counts(final)
        indexed.write_sidecar(final, {
            "version": indexed.SIDECAR_VERSION,
            "tokenizer": tok.describe(),
            "fingerprint": tok.fingerprint,
            "dtype": np.dtype(indexed.optimal_dtype(tok.vocab_size)).name,
            "json_key": k,
            "level": cfg.level,
            "append_eod": bool(cfg.append_eod),
            "documents": docs,
            "tokens": tokens,
            "rejected": int(counter["rejected"]),
            "sources": [str(f) for f in files],
        })
        outputs.append(final)
    return outputs


def _reason_counts(rejects: list[dict]) -> dict:
    c: Counter = Counter()
    for r in rejects:
        reason = r["reason"]
        # group by kind: the text before the first detail
        for kind in ("malformed JSON", "non-UTF-8", "missing key", "empty text", "exceeds",
                     "blank line", "yields no tokens", "not text", "not an object"):
            if kind in reason:
                reason = kind
                break
        c[reason] += 1
    return dict(sorted(c.items()))


def format_summary(s: dict) -> str:
    lines = [f"documents: {s['documents']:,}  tokens: {s['tokens']:,}  rejected: {s['rejected']:,}  "
             f"partitions: {s['partitions']}",
             f"time: {s['seconds']:.2f} s  throughput: {s['tokens_per_s']:,.0f} tokens/s  "
             f"({s['documents'] / max(s['seconds'], 1e-9):,.0f} docs/s, "
             f"{s['input_bytes'] / max(s['seconds'], 1e-9) / 2**20:.1f} MB/s)"]
    for reason, n in s["reasons"].items():
        lines.append(f"  rejected {n:,}: {reason}")
    if s["rejected"]:
        lines.append(f"rejects listed in {s['rejects_file']}")
    for o in s["outputs"]:
        lines.append(f"wrote {o}.bin/.idx/.json")
    if not s["ok"]:
        lines.append("error: no valid document found; nothing written")
    return "\n".join(lines)
