#!/usr/bin/env python
"""Grading throughput: this project's grader vs math-verify on the same pairs.

Pairs: every MATH test reference answer against model-style completions
derived from it deterministically - the right answer in another form
(``\\dfrac``, decimal, ``x = ...``, units, thousands separators, trailing
``.0``, "The answer is ...") and close wrong answers (off by one, a changed
digit, a flipped sign, the reciprocal).  Reports gradings per second on one
core (the grader runs in this single thread; symbolic fallbacks run in its
worker processes and are counted), agreement with the intended verdict, and
the same figures for math-verify.  The last line prints the speed ratio.

    python benchmarks/grading_throughput.py [--limit N] [--mv-limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_dsm.eval import grading  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks" / "math" / "test.jsonl"


def variants(ref: str, i: int) -> list[tuple[str, bool]]:
    """(completion, intended verdict) pairs for one reference answer."""
    out = [(f"Therefore the final answer is $\\boxed{{{ref}}}$.", True)]
    r = ref.strip()
    m = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", r)
    if re.fullmatch(r"-?\d+", r):
        n = int(r)
        out.append((f"The answer is {n:,}.", True))
        out.append((f"So $x = {n}$ and \\boxed{{{n}.0}}", True))
        out.append((f"Final Answer: The final answer is ${n} \\text{{ units}}$. I hope it is correct.", True))
        out.append((f"\\boxed{{{n + 1}}}", False))
        out.append((f"The answer is {-n if n else 1}.", False))
        s = str(abs(n))
        if len(s) > 1:
            flipped = s[:-1] + str((int(s[-1]) + 3) % 10)
            out.append((f"\\boxed{{{'-' if n < 0 else ''}{flipped}}}", False))
    elif m:
        sign, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        f = Fraction(int(sign + "1") * a, b)
        out.append((f"\\boxed{{{sign}\\dfrac{{{a}}}{{{b}}}}}", True))
        out.append((f"The answer is {sign}{a}/{b}.", True))
        if f.denominator in (2, 4, 5, 8, 10, 16, 20, 25):
            out.append((f"\\boxed{{{float(f)}}}", True))
        out.append((f"\\boxed{{{sign}\\frac{{{b}}}{{{a}}}}}", a == b))
        out.append((f"\\boxed{{{sign}\\frac{{{a + 1}}}{{{b}}}}}", False))
    else:
        out.append((f"Final Answer: The final answer is ${ref}$. I hope it is correct.", True))
        out.append((f"\\boxed{{{ref} + 1}}", False))
    return out


def build_pairs(limit: int | None) -> list[tuple[str, str, bool]]:
    rows = [json.loads(l) for l in open(DATA, encoding="utf-8")]
    if limit:
        rows = rows[:limit]
    pairs = []
    for i, r in enumerate(rows):
        for comp, want in variants(r["answer"], i):
            pairs.append((comp, r["answer"], want))
    return pairs


def time_grader(pairs, fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    agree = 0
    for comp, ref, want in pairs:
        agree += fn(comp, ref) == want
    return time.perf_counter() - t0, agree


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="first N MATH test problems (0 = all 5000)")
    ap.add_argument("--mv-limit", type=int, default=3000, help="pairs timed for math-verify (it is slower)")
    args = ap.parse_args()
    pairs = build_pairs(args.limit or None)
    # warm the symbolic worker so process start-up is not charged to the rate
    grading.is_equiv("x^2-1", "(x-1)(x+1)")
    grading.STATS.clear()
    grading.clear_caches()
    dt, agree = time_grader(pairs, grading.grade)
    rate = len(pairs) / dt
    print(f"pairs: {len(pairs)} from {DATA}")
    print(f"dsm grader: {rate:.0f} gradings/s on 1 core ({dt:.2f}s), agrees with intended verdict on "
          f"{agree}/{len(pairs)} ({100 * agree / len(pairs):.1f}%); symbolic fallbacks: "
          f"{grading.STATS['symbolic']}, timeouts: {grading.STATS['symbolic_timeout']}")
    from math_verify import parse, verify

    def mv(comp, ref):
        return bool(verify(parse("$" + ref + "$"), parse(comp)))

    sub = pairs[:: max(1, len(pairs) // args.mv_limit)][: args.mv_limit]
    dt_mv, agree_mv = time_grader(sub, mv)
    rate_mv = len(sub) / dt_mv
    print(f"math-verify: {rate_mv:.0f} gradings/s on 1 core over {len(sub)} of the pairs ({dt_mv:.2f}s), "
          f"agrees on {agree_mv}/{len(sub)} ({100 * agree_mv / len(sub):.1f}%)")
    print(f"target >= 500 gradings/s/core: {'met' if rate >= 500 else 'NOT met'}")
    print(f"ratio dsm/math-verify gradings per second: {rate / rate_mv:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
