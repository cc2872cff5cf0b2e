"""The decontamination report: hits per benchmark item and per document, plus totals."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from megatron_dsm.io import write_json
from megatron_dsm.mining.decontaminate.clean import CleanResult
from megatron_dsm.mining.decontaminate.index import BenchmarkIndex


class DecontReport:
    """Hits per benchmark item and per document, plus totals."""

    def __init__(self, index: BenchmarkIndex, max_hits_listed: int = 20):
        self.index = index
        self.max_hits_listed = max_hits_listed
        self.totals = defaultdict(int)
        self.items: dict[tuple[str, str], dict] = {}
        self.documents: list[dict] = []

    def add(self, doc_id, result: CleanResult, chars_in: int, dropped: bool = False) -> None:
        self.totals["documents"] += 1
        self.totals["chars_in"] += chars_in
        self.totals["chars_out"] += 0 if dropped else len(result.text)
        if not result.contaminated:
            return
        self.totals["documents_contaminated"] += 1
        self.totals["segments_removed"] += len(result.removed)
        self.totals["documents_dropped"] += int(dropped)
        benches = set()
        seen_items = set()
        for h in result.hits:
            t = self.index.texts[h.text_index]
            benches.add(t.benchmark)
            key = (t.benchmark, t.item)
            rec = self.items.setdefault(key, {"benchmark": t.benchmark, "item": t.item, "documents": 0,
                                              "ngram_hits": 0, "exact_hits": 0, "fields": []})
            rec[h.rule + "_hits"] += 1
            if t.field not in rec["fields"]:
                rec["fields"].append(t.field)
            if key not in seen_items:
                rec["documents"] += 1
                seen_items.add(key)
        for b in benches:
            self.totals[f"documents_contaminated_{b}"] += 1
        listed = []
        for h in result.hits[: self.max_hits_listed]:
            t = self.index.texts[h.text_index]
            listed.append({"rule": h.rule, "benchmark": t.benchmark, "item": t.item, "field": t.field,
                           "segments": list(h.segments), "match": h.match})
        self.documents.append({"id": doc_id, "segments": result.segments, "segments_removed": result.removed,
                               "chars_removed": chars_in - len(result.text), "dropped": dropped,
                               "benchmarks": sorted(benches), "hits": listed,
                               "hits_total": len(result.hits)})

    def to_dict(self, extra: dict | None = None) -> dict:
        items = sorted(self.items.values(), key=lambda r: (-r["documents"], r["benchmark"], r["item"]))
        per_bench = defaultdict(lambda: {"items_hit": 0, "documents": 0})
        for r in items:
            per_bench[r["benchmark"]]["items_hit"] += 1
        for k, v in self.totals.items():
            if k.startswith("documents_contaminated_"):
                per_bench[k[len("documents_contaminated_"):]]["documents"] = v
        return {"totals": {k: v for k, v in self.totals.items() if not k.startswith("documents_contaminated_")},
                "per_benchmark": dict(per_bench), "index": self.index.summary(), **(extra or {}),
                "items": items, "documents": self.documents}

    def write(self, path: str | Path, extra: dict | None = None) -> None:
        write_json(path, self.to_dict(extra))
