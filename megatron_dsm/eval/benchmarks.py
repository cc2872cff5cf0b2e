"""Benchmark loaders and their registry.

Every set in ``shared/data/benchmarks`` has a loader that maps its own field
layout to one ``Problem`` record, so prompts, grading and metrics never see
per-benchmark quirks (GSM8K's bare numbers, SAT's one-string options and
capitalised ``Answer`` key, MGSM's chat messages, ...).  A user adds a jsonl
benchmark through config (``register_jsonl`` or a YAML file with a
``benchmarks:`` mapping) without writing code.

miniF2F loads (for informal-statement use and decontamination) but is marked
``formal``: checking Isabelle proofs is not supported, and ``evaluable``
says so.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VENDORED = Path(__file__).resolve().parents[2] / "examples" / "data"


class BenchmarkError(ValueError):
    """A benchmark is unknown, missing or malformed; the message says where."""


@dataclass
class Problem:
    id: str
    question: str
    answer: Optional[str]               # gold final answer (letter for multiple choice)
    benchmark: str
    kind: str = "math"                  # math | choice | formal
    language: str = "en"
    subject: Optional[str] = None       # MATH type / MMLU topic
    level: Optional[int] = None         # MATH level 1-5 / CMATH grade
    choices: Optional[list[str]] = None
    solution: Optional[str] = None
    meta: dict = field(default_factory=dict)


@dataclass
class BenchmarkSpec:
    name: str
    path: str                           # relative to the data root, or absolute
    loader: Callable[[dict, int, str], Problem]
    kind: str = "math"
    language: str = "en"
    evaluable: bool = True
    note: str = ""


REGISTRY: dict[str, BenchmarkSpec] = {}


def register(spec: BenchmarkSpec) -> BenchmarkSpec:
    REGISTRY[spec.name] = spec
    return spec


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise BenchmarkError(f"benchmark file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{path}:{n}: invalid JSON ({e.msg})") from None
    return rows


def _level(v) -> Optional[int]:
    m = re.search(r"\d+", str(v)) if v is not None else None
    return int(m.group(0)) if m else None


_SUBJECT_FROM_ID = re.compile(r"test/([a-z_]+)/")


def _math(name):
    def load(r, i, _):
        subject = r.get("type") or r.get("subject")
        return Problem(id=r.get("unique_id", f"{name}-{i}"), question=r["problem"], answer=r["answer"],
                       benchmark=name, subject=subject, level=_level(r.get("level")),
                       solution=r.get("solution"))
    return load


def _gsm8k(r, i, name):
    return Problem(id=r.get("id", f"{name}-{i}"), question=r["question"], answer=str(r["answer"]),
                   benchmark=name, solution=r.get("cot"))


def _gsm8k_openai(r, i, name):
    ans = r["answer"].rsplit("####", 1)
    if len(ans) != 2:
        raise BenchmarkError(f"{name} row {i}: answer has no '#### final' part")
    return Problem(id=f"{name}-{i}", question=r["question"], answer=ans[1].strip().replace(",", ""),
                   benchmark=name, solution=ans[0].strip())


def _cmath(r, i, name):
    return Problem(id=f"{name}-{i}", question=r["question"], answer=str(r["golden"]), benchmark=name,
                   language="zh", level=r.get("grade"), meta={"reasoning_step": r.get("reasoning_step")})


def _mgsm(r, i, name):
    q = next((m["content"] for m in r["messages"] if m.get("role") == "user"), None)
    if q is None:
        raise BenchmarkError(f"{name} row {i}: no user message")
    return Problem(id=str(r.get("id", i)), question=q, answer=str(r["answer"]), benchmark=name, language="zh")


def _choices_from_list(opts: list[str]) -> list[str]:
    return [re.sub(r"^\(?[A-E]\)\s*", "", o).strip() for o in opts]


def _gaokao_qa(r, i, name):
    return Problem(id=f"{name}-{i}", question=r["question"].strip(), answer="".join(sorted(set(re.findall("[A-E]", r["label"])))),
                   benchmark=name, kind="choice", language="zh", choices=_choices_from_list(r["options"]),
                   meta={"source": (r.get("other") or {}).get("source")})


def _gaokao_cloze(r, i, name):
    return Problem(id=f"{name}-{i}", question=r["question"].strip(), answer=r["answer"], benchmark=name,
                   language="zh", meta={"source": (r.get("other") or {}).get("source")})


def _sat(r, i, name):
    parts = re.split(r"(?:^|\s)([A-D])[).]\s*", r["options"])
    choices = [parts[j + 1].strip() for j in range(1, len(parts) - 1, 2)]
    if len(choices) != 4:
        raise BenchmarkError(f"{name} row {i}: expected options A)-D), got {r['options']!r}")
    return Problem(id=str(r["id"]), question=r["question"], answer=r["Answer"], benchmark=name,
                   kind="choice", choices=choices)


def _mmlu(r, i, name):
    return Problem(id=str(r.get("id", i)), question=r["question"], answer=r["answer"], benchmark=name,
                   kind="choice", choices=list(r["options"]), subject=r.get("topic"))


def _ocw(r, i, name):
    return Problem(id=str(r.get("id", i)), question=r["problem"], answer=r["answer"], benchmark=name,
                   solution=r.get("solution"))


def _minif2f(r, i, name):
    return Problem(id=r.get("problem_name", f"{name}-{i}"), question=r["informal_statement"], answer=None,
                   benchmark=name, kind="formal", solution=r.get("informal_proof"),
                   meta={"formal_statement": r["formal_statement"], "header": r.get("header")})


_FORMAL_NOTE = "formal proof checking (Isabelle) is not supported; problems load for reference only"

for _spec in [
    BenchmarkSpec("gsm8k", "benchmarks/gsm8k/test.jsonl", _gsm8k),
    BenchmarkSpec("gsm8k_openai", "benchmarks/gsm8k_openai/test.jsonl", _gsm8k_openai),
    BenchmarkSpec("math", "benchmarks/math/test.jsonl", _math("math")),
    BenchmarkSpec("math500", "benchmarks/math500/test.jsonl", _math("math500")),
    BenchmarkSpec("cmath", "benchmarks/cmath/test.jsonl", _cmath, language="zh"),
    BenchmarkSpec("mgsm_zh", "benchmarks/mgsm_zh/mgsm_zh.jsonl", _mgsm, language="zh"),
    BenchmarkSpec("gaokao_mathqa", "benchmarks/agieval/gaokao-mathqa.jsonl", _gaokao_qa,
                  kind="choice", language="zh"),
    BenchmarkSpec("gaokao_mathcloze", "benchmarks/agieval/gaokao-mathcloze.jsonl", _gaokao_cloze,
                  language="zh"),
    BenchmarkSpec("sat", "benchmarks/sat/test.jsonl", _sat, kind="choice"),
    BenchmarkSpec("ocw", "benchmarks/ocw/test.jsonl", _ocw),
    BenchmarkSpec("mmlu_stem", "benchmarks/mmlu_stem/test.jsonl", _mmlu, kind="choice"),
    BenchmarkSpec("minif2f_test", "benchmarks/minif2f/test.jsonl", _minif2f, kind="formal",
                  evaluable=False, note=_FORMAL_NOTE),
    BenchmarkSpec("minif2f_valid", "benchmarks/minif2f/validation.jsonl", _minif2f, kind="formal",
                  evaluable=False, note=_FORMAL_NOTE),
    # The MIT-licensed copies vendored in examples/data: usable without ../shared.
    BenchmarkSpec("gsm8k_vendored", str(VENDORED / "gsm8k" / "test.jsonl"), _gsm8k_openai),
    BenchmarkSpec("math_vendored", str(VENDORED / "math" / "test.jsonl"), _math("math_vendored")),
]:
    register(_spec)


def register_jsonl(name: str, path: str, *, question_field: str = "question",
                   answer_field: str = "answer", id_field: Optional[str] = None,
                   kind: str = "math", language: str = "en",
                   choices_field: Optional[str] = None) -> BenchmarkSpec:
    """Register a user jsonl benchmark: one JSON object per line with a
    question and a gold answer field (a letter when ``kind='choice'``)."""
    if kind not in ("math", "choice"):
        raise BenchmarkError(f"benchmark {name}: kind must be 'math' or 'choice', got {kind!r}")

    def load(r, i, bname):
        for f in (question_field, answer_field):
            if f not in r:
                raise BenchmarkError(f"{path} row {i}: missing field {f!r} for benchmark {bname}")
        return Problem(id=str(r[id_field]) if id_field else f"{bname}-{i}", question=str(r[question_field]),
                       answer=str(r[answer_field]), benchmark=bname, kind=kind, language=language,
                       choices=list(r[choices_field]) if choices_field else None)

    return register(BenchmarkSpec(name, path, load, kind=kind, language=language))


def register_from_config(cfg: dict | str) -> list[str]:
    """Register benchmarks from a mapping ``{name: {path:, question_field:, ...}}``
    or a YAML file holding it under ``benchmarks:``."""
    if isinstance(cfg, (str, os.PathLike)):
        import yaml
        p = Path(cfg)
        if not p.is_file():
            raise BenchmarkError(f"benchmark config not found: {p}")
        cfg = (yaml.safe_load(p.read_text()) or {}).get("benchmarks", {})
    names = []
    for name, opts in cfg.items():
        if not isinstance(opts, dict) or "path" not in opts:
            raise BenchmarkError(f"benchmark config {name!r}: needs at least a 'path'")
        register_jsonl(name, **opts)
        names.append(name)
    return names


def load_benchmark(name: str, data_root: str | Path | None = None, limit: Optional[int] = None,
                   allow_formal: bool = False) -> list[Problem]:
    """Load a registered benchmark as a list of ``Problem``."""
    if name not in REGISTRY:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    if not spec.evaluable and not allow_formal:
        raise BenchmarkError(f"benchmark {name}: {spec.note} (pass allow_formal=True to load it)")
    root = Path(data_root or os.environ.get("DSM_DATA_ROOT") or DEFAULT_DATA_ROOT)
    path = Path(spec.path) if os.path.isabs(spec.path) else root / spec.path
    rows = _read_jsonl(path)
    if limit is not None:
        rows = rows[:limit]
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(spec.loader(r, i, name))
        except KeyError as e:
            raise BenchmarkError(f"{path} row {i}: missing field {e} for benchmark {name}") from None
    return out
