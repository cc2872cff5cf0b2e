"""Which benchmark texts are indexed: every text field of an item that a page
could quote.

That is the question/problem, the answer, the solution or rationale (GSM8K
calculator annotations ``<<a*b=c>>`` removed, as they never appear in the
wild) and the text of the correct option for multiple choice.  Each known
benchmark has its field extractor in ``BENCHMARK_LAYOUT``; any other jsonl
under the benchmarks folder is read with generic field names.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Sequence

from megatron_dsm.config import ConfigError
from megatron_dsm.io import read_jsonl


@dataclasses.dataclass(frozen=True)
class BenchmarkText:
    """One indexed text: which benchmark item and which field it came from."""

    benchmark: str
    item: str
    field: str
    text: str


_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


def _as_list(x) -> list:
    if isinstance(x, list):
        return x
    return [] if x is None else [x]


def _option(options, letter) -> list[tuple[str, str]]:
    """Text of the correct option(s) (letters ``A``..; ``AB`` for several)."""
    out = []
    if isinstance(options, str):  # SAT: "A) ... B) ... C) ..."
        parts = re.split(r"(?:^|\s)([A-E])\)\s*", options)
        table = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    else:
        table = {}
        for i, o in enumerate(_as_list(options)):
            o = str(o)
            m = re.match(r"\s*\(?([A-E])\)\s*", o)
            table[m.group(1) if m else chr(65 + i)] = o[m.end():] if m else o
    for ch in str(letter or ""):
        if ch in table:
            out.append(("option_" + ch, table[ch]))
    return out


def _fields_gsm8k(r):
    yield "question", r.get("question")
    ans = r.get("answer")
    if r.get("cot") is not None:  # DeepSeek format: bare answer, rationale in cot
        yield "cot", _GSM8K_CALC.sub("", str(r["cot"]))
    elif ans is not None:  # OpenAI format: rationale + "#### N"
        ans = _GSM8K_CALC.sub("", str(ans))
        if "####" in ans:
            rationale, final = ans.rsplit("####", 1)
            yield "rationale", rationale
            ans = final
    yield "answer", ans


def _fields_math(r):
    yield "problem", r.get("problem")
    yield "solution", r.get("solution")
    yield "answer", r.get("answer")


def _fields_cmath(r):
    yield "question", r.get("question")
    yield "answer", r.get("golden")


def _fields_mgsm(r):
    msgs = r.get("messages")
    for m in _as_list(msgs):
        if isinstance(m, dict) and m.get("role") == "user":
            yield "question", m.get("content")
    yield "answer", r.get("answer")


def _fields_gaokao(r):
    yield "question", r.get("question")
    if r.get("passage"):
        yield "passage", r["passage"]
    yield "answer", r.get("answer")
    yield from _option(r.get("options"), r.get("label"))


def _fields_sat(r):
    yield "question", r.get("question")
    yield from _option(r.get("options"), r.get("Answer"))


def _fields_mmlu(r):
    yield "question", r.get("question")
    yield from _option(r.get("options"), r.get("answer"))


def _fields_minif2f(r):
    yield "informal_statement", r.get("informal_statement")
    yield "informal_proof", r.get("informal_proof")
    yield "formal_statement", r.get("formal_statement")


_GENERIC_KEYS = ("question", "problem", "query", "prompt", "answer", "solution", "cot",
                 "rationale", "golden", "informal_statement", "informal_proof")


def _fields_generic(r):
    for k in _GENERIC_KEYS:
        if isinstance(r.get(k), str):
            yield k, r[k]


# name, glob under the benchmarks folder, field extractor, id key
BENCHMARK_LAYOUT: tuple[tuple[str, str, Callable, str | None], ...] = (
    ("gsm8k", "gsm8k/*.jsonl", _fields_gsm8k, "id"),
    ("gsm8k_openai", "gsm8k_openai/*.jsonl", _fields_gsm8k, None),
    ("math", "math/*.jsonl", _fields_math, "unique_id"),
    ("math500", "math500/*.jsonl", _fields_math, "unique_id"),
    ("cmath", "cmath/*.jsonl", _fields_cmath, None),
    ("mgsm_zh", "mgsm_zh/*.jsonl", _fields_mgsm, "id"),
    ("gaokao", "agieval/gaokao-*.jsonl", _fields_gaokao, None),
    ("sat", "sat/*.jsonl", _fields_sat, "id"),
    ("ocw", "ocw/*.jsonl", _fields_math, "id"),
    ("mmlu_stem", "mmlu_stem/*.jsonl", _fields_mmlu, "id"),
    ("minif2f", "minif2f/*.jsonl", _fields_minif2f, "problem_name"),
)


def load_benchmarks(root: str | Path, names: Sequence[str] | None = None) -> list[BenchmarkText]:
    """All indexable texts of the benchmarks under ``root``.

    ``root`` is laid out like ``shared/data/benchmarks`` (see
    ``BENCHMARK_LAYOUT``); ``names`` restricts to some benchmarks (default:
    every known one that is present).  Any other ``*.jsonl`` under ``root`` is
    read with generic field names (question, problem, answer, solution, ...)
    under the name of its folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"benchmarks folder not found: {root}")
    known = {n for n, *_ in BENCHMARK_LAYOUT}
    if names:
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError(f"unknown benchmark name(s) {bad}; known: {sorted(known)}")
    out: list[BenchmarkText] = []
    claimed: set[Path] = set()
    for name, pattern, fields, id_key in BENCHMARK_LAYOUT:
        files = sorted(root.glob(pattern))
        claimed.update(files)
        if names and name not in names:
            continue
        for path in files:
            out.extend(_read_benchmark_file(path, name, fields, id_key, root))
    if not names:
        for path in sorted(root.rglob("*.jsonl")):
            if path not in claimed:
                bench = path.parent.name if path.parent != root else path.stem
                out.extend(_read_benchmark_file(path, bench, _fields_generic, "id", root))
    if not out:
        raise ConfigError(f"{root}: no benchmark jsonl files found (expected e.g. gsm8k/test.jsonl)")
    return out


def _read_benchmark_file(path: Path, name: str, fields, id_key, root: Path) -> list[BenchmarkText]:
    rel = path.relative_to(root).as_posix()
    out = []
    for lineno, r in read_jsonl(path, error=ConfigError):
        item = str(r[id_key]) if id_key and r.get(id_key) is not None else f"{rel}:{lineno}"
        for fname, text in fields(r):
            if text is not None and str(text).strip():
                out.append(BenchmarkText(name, item, fname, str(text)))
    return out
