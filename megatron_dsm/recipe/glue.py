"""What passes between two tools and what a stage's effect is measured
from: small functions the stages call in process.

* joining the mining run's shards into the corpus file the next tool reads;
* precision and recall of the recalled pages against the labels the web
  sample and the task's pages carry;
* which planted contaminated pages decontamination cut;
* outcome reward-model records from the policy's graded samples;
* the numbers in the training tools' logs (``--log-json`` lines and the
  evaluation lines ``<title> at iteration N | key: value |``).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import yaml

from megatron_dsm.io import atomic_path, atomic_write, read_json, read_jsonl, write_jsonl
from megatron_dsm.training.logging import parse_line


def join_shards(folder: Path, out: Path) -> int:
    """Every record of ``folder``'s jsonl(.gz) shards, in shard order, into one jsonl."""
    return concat_jsonl(sorted(str(p) for p in Path(folder).glob("*.jsonl*") if p.is_file()), out)


def concat_jsonl(inputs: list[str], out: Path) -> int:
    """The records of several jsonl(.gz) files, one after the other."""
    n = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for path in inputs:
            for _, rec in read_jsonl(path):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return n


def labels(inputs: list[str]) -> dict[str, dict]:
    """id -> {label, planted} of every page of the mining input files that carries a label."""
    out = {}
    for path in inputs:
        files = sorted(q for q in Path(path).rglob("*.jsonl*")) if Path(path).is_dir() else [Path(path)]
        for f in files:
            for _, rec in read_jsonl(f):
                if rec.get("id") is not None and rec.get("label"):
                    out[str(rec["id"])] = {"label": rec["label"], "planted": rec.get("planted"),
                                           "task": str(rec["id"]).startswith("task-")}
    return out


def recall_metrics(inputs: list[str], corpus: Path) -> dict:
    """Precision / recall of the recalled pages against the sample's labels
    (``math`` is positive), also for the task's pages alone."""
    gold = labels(inputs)
    got = {str(r.get("id")) for _, r in read_jsonl(corpus)}
    pos = {i for i, g in gold.items() if g["label"] == "math"}
    task = {i for i, g in gold.items() if g["task"]}
    tp = len(got & pos)
    return {"pages_in": len(gold), "math_pages_in": len(pos), "pages_recalled": len(got),
            "precision": round(tp / len(got), 4) if got else 0.0,
            "recall": round(tp / len(pos), 4) if pos else 0.0,
            "task_pages_recall": round(len(got & task) / len(task), 4) if task else None}


def planted_cut(corpus_in: Path, report: Path) -> dict:
    """How many of the planted contaminated pages that reached decontamination it cut."""
    planted = {str(r["id"]): r["planted"] for _, r in read_jsonl(corpus_in) if r.get("planted")}
    docs = read_json(report).get("documents") or []
    cut = {str(d.get("id")) for d in docs if d.get("segments_removed") or d.get("dropped")}
    by_kind: dict[str, list[int]] = {}
    for pid, kind in planted.items():
        seen = by_kind.setdefault(kind, [0, 0])
        seen[0] += 1
        seen[1] += pid in cut
    return {"planted_in": len(planted), "planted_cut": sum(v[1] for v in by_kind.values()),
            "planted": {k: {"in": v[0], "cut": v[1]} for k, v in sorted(by_kind.items())},
            "other_pages_cut": len(cut - set(planted))}


def benchmark_config(name: str, questions: str, out: Path) -> Path:
    """A user-benchmark YAML for tools/evaluate.py naming a jsonl of {id, question, answer}."""
    atomic_write(out, yaml.safe_dump({"benchmarks": {name: {"path": str(Path(questions).resolve()),
                                                            "id_field": "id"}}}))
    return out


def orm_records(samples: Path, questions: str, out_dir: Path, valid_fraction: float, seed: int = 0) -> dict:
    """Graded samples (tools/evaluate.py records) -> outcome RM records
    {question, solution, label}, split into train / valid by question so the
    AUC is measured on questions the RM never saw.  Empty completions carry
    no solution to score and are left out (counted as ``empty``)."""
    text = {str(r["id"]): r["question"] for _, r in read_jsonl(questions)}
    rows = [r for _, r in read_jsonl(samples)]
    random.Random(seed).shuffle(rows)
    n_valid = max(1, int(len(rows) * valid_fraction))
    counts = {"empty": 0}
    for name, part in (("valid", rows[:n_valid]), ("train", rows[n_valid:])):
        pairs = [(r, c.strip(), ok) for r in part for c, ok in zip(r["completions"], r["correct"])]
        recs = [{"question": text[str(r["id"])], "solution": c, "label": int(ok)} for r, c, ok in pairs if c]
        counts["empty"] += len(pairs) - len(recs)
        write_jsonl(out_dir / f"orm_{name}.jsonl", recs)
        counts[name] = len(recs)
        counts[f"{name}_correct"] = sum(r["label"] for r in recs)
    return counts


_EVAL = re.compile(r"(?:^|\s)([A-Za-z][\w -]*?) at iteration (\d+) \|(.*)$")


def eval_lines(log: Path) -> list[tuple[str, int, dict]]:
    """(title, iteration, fields) of the evaluation lines a training tool printed."""
    out = []
    if not Path(log).is_file():
        return out
    for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines():
        m = _EVAL.search(line)
        if not m:
            continue
        fields = parse_line(f"iteration {m.group(2)}/0 |{m.group(3)}") or {}
        out.append((m.group(1).strip(), int(m.group(2)), {k: v for k, v in fields.items()
                                                         if k not in ("iteration", "train_iters")}))
    return out


def log_records(path: Path) -> list[dict]:
    """The --log-json records of a training run (one per log interval)."""
    if not Path(path).is_file():
        return []
    return [r for _, r in read_jsonl(path)]
