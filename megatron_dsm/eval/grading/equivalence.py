"""Equivalence of two answers, cheapest check first: normalised string
equality, integers, the numeric fast path, structure (tuples, intervals,
sets, matrices, equations, element by element), then sympy."""

from __future__ import annotations

import re
from typing import Optional

from megatron_dsm.eval.grading.extract import (
    HASH_RE,
    extract_answer,
    extract_choice,
    extract_choices,
    last_boxed,
)
from megatron_dsm.eval.grading.normalise import normalize_answer
from megatron_dsm.eval.grading.numeric import close, numeric_value
from megatron_dsm.eval.grading.symbolic import STATS, symbolic_equiv


def _split_top(s: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, []
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _brackets(s: str) -> Optional[tuple[str, str, str]]:
    """(open, inner, close) if s is wholly enclosed by one bracket pair."""
    if len(s) < 2:
        return None
    pairs = {"(": ")[", "[": "])", "\\{": "\\}"}
    if s.startswith("\\{") and s.endswith("\\}"):
        return "{", s[2:-2], "}"
    if s[0] in "([" and s[-1] in ")]":
        depth = 0
        for i, c in enumerate(s):
            depth += c in "(["
            depth -= c in ")]"
            if depth == 0 and i != len(s) - 1:
                return None
        return s[0], s[1:-1], s[-1]
    del pairs
    return None


_MATRIX_RE = re.compile(r"\\begin\{[pbvBV]?matrix\}(.*)\\end\{[pbvBV]?matrix\}", re.S)


def _matrix(s: str) -> Optional[list[list[str]]]:
    m = _MATRIX_RE.fullmatch(s)
    if not m:
        return None
    rows = [r for r in m.group(1).split("\\\\") if r.strip()]
    return [[c.strip() for c in r.split("&")] for r in rows]


_SIMPLE_LHS_RE = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:\([a-z]\))?$")


def _equiv_structured(a: str, b: str, depth: int) -> Optional[bool]:
    """Decide tuples / intervals / sets / matrices / equations; None if n/a."""
    ma, mb = _matrix(a), _matrix(b)
    if ma is not None or mb is not None:
        if ma is None or mb is None:
            return False
        if [len(r) for r in ma] != [len(r) for r in mb]:
            return False
        return all(_equiv_norm(x, y, depth + 1) for ra, rb in zip(ma, mb) for x, y in zip(ra, rb))
    # equations: x=3 vs 3
    if ("=" in a) != ("=" in b):
        eq, other = (a, b) if "=" in a else (b, a)
        sides = eq.split("=")
        if len(sides) == 2 and _SIMPLE_LHS_RE.match(sides[0]) and "=" not in other:
            return _equiv_norm(sides[1], other, depth + 1)
        return None
    if "=" in a and "=" in b and a.count("=") == 1 and b.count("=") == 1:
        la, ra = a.split("=")
        lb, rb = b.split("=")
        if la == lb and _equiv_norm(ra, rb, depth + 1):
            return True
        if la == rb and ra == lb:
            return True
        return None          # y=2x+1 vs 2x-y=-1: symbolic
    ba, bb = _brackets(a), _brackets(b)
    pa = _split_top(ba[1] if ba else a)
    pb = _split_top(bb[1] if bb else b)
    if len(pa) == 1 and len(pb) == 1:
        return None
    if len(pa) != len(pb):
        return False
    if ba and bb:
        if ba[0] == "{" or bb[0] == "{":           # sets: order does not matter
            if ba[0] != bb[0]:
                return False
            rest = list(pb)
            for x in pa:
                hit = next((y for y in rest if _equiv_norm(x, y, depth + 1)), None)
                if hit is None:
                    return False
                rest.remove(hit)
            return True
        if (ba[0], ba[2]) != (bb[0], bb[2]):   # (1,2] vs (1,2): different intervals
            return False
    elif ba or bb:
        # "(1,2)" vs "1,2": a tuple written with and without parentheses;
        # but a half-open interval is never equal to a bare list
        br = ba or bb
        if (br[0], br[2]) != ("(", ")"):
            return False
    return all(_equiv_norm(x, y, depth + 1) for x, y in zip(pa, pb))


_LATEXISH_RE = re.compile(r"[a-zA-Z\\^_]")
_INT_RE = re.compile(r"-?\d+")
_LATEX_CMD_RE = re.compile(r"\\[a-zA-Z]+")
_FREE_LETTER_RE = re.compile(r"[a-zA-Z]")


def _never_a_constant(s: str) -> bool:
    """A text answer ("Evelyn") or an expression with a free variable
    ("x+2": letters left after dropping LaTeX commands such as \\frac, \\pi)
    cannot equal a number.  Deciding this here keeps the garbage a weak policy
    writes away from sympy, where a single call can take seconds."""
    return not _LATEXISH_RE.search(s) or bool(_FREE_LETTER_RE.search(_LATEX_CMD_RE.sub("", s)))


def _equiv_norm(a: str, b: str, depth: int = 0, symbolic: bool = True) -> bool:
    """Equivalence of two already-normalised answers."""
    if a == b:
        return True
    if not a or not b or depth > 4:
        return False
    if _INT_RE.fullmatch(a) and _INT_RE.fullmatch(b):
        STATS["numeric"] += 1
        return int(a) == int(b)     # integers are exact: 70001 is not 70000
    va, vb = numeric_value(a), numeric_value(b)
    if va is not None and vb is not None:
        STATS["numeric"] += 1
        if close(va, vb):
            return True
        # "50%" vs "50": the same answer with or without the percent sign
        if a.endswith("%") != b.endswith("%"):
            return close(va * 100, vb) if a.endswith("%") else close(va, vb * 100)
        return False
    s = _equiv_structured(a, b, depth)
    if s is not None:
        STATS["structured"] += 1
        return s
    if (va is not None and _never_a_constant(b)) or (vb is not None and _never_a_constant(a)):
        return False
    if not symbolic:
        return False
    if a.lower() == b.lower() and not re.search(r"\\|[0-9]", a):
        return True      # plain words differing in case
    STATS["symbolic"] += 1
    got = symbolic_equiv(a, b)
    return bool(got)


def is_equiv(a: Optional[str], b: Optional[str], *, symbolic: bool = True) -> bool:
    """Are two answer strings mathematically the same answer?"""
    if a is None or b is None:
        return False
    return _equiv_norm(normalize_answer(a), normalize_answer(b), 0, symbolic)


def _strip_reference(reference: str) -> str:
    """References may be a full solution (``... #### 72``, ``\\boxed{}``)."""
    r = str(reference).strip()
    if "\\boxed" in r or "\\fbox" in r:
        return last_boxed(r) or r
    m = list(HASH_RE.finditer(r))
    if m:
        return m[-1].group(1).strip()
    return r


def _grade_math_verify(completion: str, reference: str) -> bool:
    # math-verify is the optional second grader: loaded only when asked for
    from math_verify import parse, verify

    gold = parse("$" + reference + "$")
    pred = parse(completion)
    return bool(verify(gold, pred))


def grade(completion: str, reference: str, *, grader: str = "dsm") -> bool:
    """Extract the final answer of ``completion`` and compare with ``reference``.

    ``grader``: ``"dsm"`` (this package) or ``"math_verify"``.
    """
    if grader == "math_verify":
        return _grade_math_verify(completion, _strip_reference(reference))
    if grader != "dsm":
        raise ValueError(f"grade: unknown grader {grader!r} (use 'dsm' or 'math_verify')")
    ref = _strip_reference(reference)
    if re.fullmatch(r"[A-E](?:[\s,]*[A-E])+", ref.strip()):     # multi-select (Gaokao)
        return extract_choices(completion) == "".join(sorted(set(re.findall("[A-E]", ref))))
    if re.fullmatch(r"\(?[A-E]\)?", ref.strip()):
        return extract_choice(completion) == ref.strip("() ").upper()
    pred = extract_answer(completion)
    if pred is None:
        return False
    return is_equiv(pred, ref)
