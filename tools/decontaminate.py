#!/usr/bin/env python
"""Remove benchmark-contaminated text from a jsonl corpus (DeepSeekMath rule).

    python tools/decontaminate.py --input docs.jsonl --output clean.jsonl \\
        --benchmarks ../shared/data/benchmarks --report report.json

Every segment (line, or paragraph with ``--segment paragraph``) that contains
a 10-gram of a benchmark question or answer is removed; segments equal to a
short (3-9 token) benchmark text are removed too.  See
``megatron_dsm/mining/decontaminate/normalise.py`` for the normalisation.

Records keep all their other fields.  The text is ``--text-key`` (default
``text``); records without it but with a chat ``messages`` list (SFT / RL
data) have every message ``content`` cleaned.  ``--action drop-record`` drops
a contaminated record whole instead of cutting segments out of it (the usual
choice for SFT and RL sets, where a cut prompt is useless).  Records left
with no text are dropped.  Lines that are not JSON objects with a string text
are counted as bad, listed in the report and skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
from tqdm import tqdm  # noqa: E402

from megatron_dsm.config import ConfigError, add_arguments, field, from_namespace, options  # noqa: E402
from megatron_dsm.io import atomic_path  # noqa: E402
from megatron_dsm.mining.decontaminate import (  # noqa: E402
    BenchmarkIndex, DecontConfig, Decontaminator, DecontReport, merge_results, open_text,
    record_texts, set_record_text)


@options
class DecontIO:
    """Files and record shape for the decontamination CLI."""

    input: str = field("", help="input jsonl (.gz allowed)")
    output: str = field("", help="output jsonl of cleaned records (.gz allowed)")
    benchmarks: str = field("", help="benchmarks folder laid out like shared/data/benchmarks")
    report: str = field("", help="JSON report: totals, hits per benchmark item and per document")
    text_key: str = field("text", help="field holding the text")
    messages_key: str = field("messages", help="chat field used when text_key is absent")
    action: str = field("remove-segments", choices=("remove-segments", "drop-record"),
                        help="cut contaminated segments out, or drop the whole record")
    batch_records: int = field(2000, help="records cleaned per batch")
    bad_lines_listed: int = field(20, help="bad input lines listed in the report")

    def __post_init__(self):
        for name in ("input", "output", "benchmarks", "report"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")
        if not Path(self.input).is_file():
            raise ConfigError(f"--input: file not found: {self.input}")
        if not Path(self.benchmarks).is_dir():
            raise ConfigError(f"--benchmarks: folder not found: {self.benchmarks}")
        if Path(self.output).resolve() == Path(self.input).resolve():
            raise ConfigError("--output must differ from --input")
        if self.batch_records < 1:
            raise ConfigError(f"--batch-records must be >= 1, got {self.batch_records}")


def parse_args(argv=None) -> tuple[DecontIO, DecontConfig]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, DecontIO, "files")
    add_arguments(p, DecontConfig, "decontamination")
    ns = p.parse_args(argv)
    return from_namespace(DecontIO, ns), from_namespace(DecontConfig, ns)


def run(io: DecontIO, cfg: DecontConfig) -> dict:
    t0 = time.perf_counter()
    index = BenchmarkIndex.from_dir(io.benchmarks, cfg)
    core = Decontaminator(index, cfg)
    report = DecontReport(index, cfg.max_hits_listed)
    t_index = time.perf_counter() - t0
    counts = {"lines": 0, "bad_lines": 0, "records_written": 0, "records_dropped": 0}
    bad: list[str] = []

    total = os.path.getsize(io.input)
    t1 = time.perf_counter()
    # the temp file is compressed when the output's name asks for it
    with atomic_path(io.output) as tmp, open_text(io.input, "rt") as fin, \
            open_text(tmp, "wt", gz=io.output.endswith(".gz")) as fout, \
            tqdm(total=total, unit="B", unit_scale=True, desc="decontaminate", disable=None) as bar:
        batch: list[tuple[int, dict, list]] = []
        for lineno, line in enumerate(fin, 1):
            bar.update(len(line.encode("utf-8")) if not io.input.endswith(".gz") else 0)
            counts["lines"] += 1
            if not line.strip():
                continue
            parsed = _parse_record(line, lineno, io, counts, bad)
            if parsed is None:
                continue
            batch.append((lineno, *parsed))
            if len(batch) >= io.batch_records:
                _clean_records(batch, core, report, io, fout, counts)
                batch.clear()
        if batch:
            _clean_records(batch, core, report, io, fout, counts)
    dt = time.perf_counter() - t1
    extra = {"input": io.input, "output": io.output, "action": io.action, "config": dataclasses.asdict(cfg),
             "records": counts, "bad_lines": bad, "seconds": {"index": round(t_index, 3), "clean": round(dt, 3)}}
    report.write(io.report, extra)
    return {**report.totals, **counts}


def _parse_record(line: str, lineno: int, io: DecontIO, counts: dict, bad: list[str]):
    """(record, its texts), or None for a bad line (counted, and listed up to a limit)."""
    try:
        rec = orjson.loads(line)
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
        return rec, record_texts(rec, io.text_key, io.messages_key)
    except (orjson.JSONDecodeError, ValueError) as e:
        counts["bad_lines"] += 1
        if len(bad) < io.bad_lines_listed:
            reason = "invalid JSON" if isinstance(e, orjson.JSONDecodeError) else str(e)
            bad.append(f"{io.input}:{lineno}: {reason}")
        return None


def _clean_records(batch: list, core: Decontaminator, report: DecontReport, io: DecontIO, fout,
                   counts: dict) -> None:
    """Clean a batch of records in one scan; write the kept ones, report all."""
    texts = [t for _, _, parts in batch for _, t in parts]
    results = iter(core.clean_batch(texts))
    for lineno, rec, parts in batch:
        res = [next(results) for _ in parts]
        doc_id = rec.get("id", f"line {lineno}")
        dirty = any(r.contaminated for r in res)
        chars = sum(len(t) for _, t in parts)
        if dirty and io.action == "drop-record":
            drop = True
        else:
            for (addr, _), r in zip(parts, res):
                if r.contaminated:
                    set_record_text(rec, addr, r.text)
            drop = dirty and not any(r.text.strip() for r in res)
        report.add(doc_id, merge_results(res), chars, dropped=drop)
        if drop:
            counts["records_dropped"] += 1
        else:
            fout.write(orjson.dumps(rec).decode() + "\n")
            counts["records_written"] += 1


def main(argv=None) -> int:
    try:
        io, cfg = parse_args(argv)
        totals = run(io, cfg)
    except ConfigError as e:
        print(f"decontaminate: error: {e}", file=sys.stderr)
        return 2
    print(f"decontaminate: records={totals.get('documents', 0)} contaminated={totals.get('documents_contaminated', 0)} "
          f"segments_removed={totals.get('segments_removed', 0)} dropped={totals['records_dropped']} "
          f"bad_lines={totals['bad_lines']} written={totals['records_written']} report={io.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
