"""The numeric fast path: constant LaTeX or plain expressions (``\\frac``,
``\\sqrt``, ``\\pi``, powers, implicit products, percentages) evaluated by a
small in-process parser and compared at a relative tolerance.  It decides
most pairs, right or wrong, without sympy."""

from __future__ import annotations

import functools
import math
import re
from typing import Optional


class _NotNumeric(Exception):
    pass


_TOK_RE = re.compile(r"\d+\.\d*|\.\d+|\d+|\\[a-zA-Z]+|\S")
_FUNCS = {"\\sin": math.sin, "\\cos": math.cos, "\\tan": math.tan, "\\ln": math.log,
          "\\log": math.log10, "\\exp": math.exp}
_IGNORED = {"\\left", "\\right", "\\,", "\\!", "\\displaystyle"}


class _Eval:
    """Recursive-descent evaluator for constant expressions (floats)."""

    def __init__(self, s: str):
        self.t = [x for x in _TOK_RE.findall(s) if x not in _IGNORED]
        self.i = 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise _NotNumeric(tok)
        self.i += 1
        return tok

    def run(self) -> float:
        v = self.expr()
        if self.peek() is not None:
            raise _NotNumeric(self.peek())
        return v

    def expr(self):
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            r = self.term()
            v = v + r if op == "+" else v - r
        return v

    def term(self):
        v = self.unary()
        while True:
            p = self.peek()
            if p in ("*", "\\cdot", "\\times", "/", "\\div"):
                self.take()
                r = self.unary()
                v = v / r if p in ("/", "\\div") else v * r
            elif p is not None and (p[0].isdigit() or p in ("(", "{", "\\frac", "\\sqrt", "\\pi")
                                    or p in _FUNCS or p[0] == "."):
                v = v * self.power()     # implicit product: 2\sqrt{3}, 3\pi, 2(5)
            else:
                return v

    def unary(self):
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exp = self.atom() if self.peek() != "-" else (self.take(), -self.atom())[1]
            if abs(exp) > 1000 or (abs(base) > 1e6 and abs(exp) > 50):
                raise _NotNumeric("huge power")
            base = base ** exp
            if isinstance(base, complex):
                raise _NotNumeric("complex")
        return base

    def group(self):
        if self.peek() == "{":
            self.take()
            v = self.expr()
            self.take("}")
            return v
        tok = self.take()
        if tok[0].isdigit():
            # single-character argument, as in \frac12 (normalisation fixes most)
            if len(tok) > 1:
                self.t.insert(self.i, tok[1:])
            return float(tok[0])
        raise _NotNumeric(tok)

    def atom(self):
        tok = self.peek()
        if tok is None:
            raise _NotNumeric("end")
        if tok[0].isdigit() or tok[0] == ".":
            self.take()
            return float(tok)
        if tok in ("(", "{", "["):
            self.take()
            v = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return v
        if tok == "\\frac":
            self.take()
            a = self.group()
            b = self.group()
            return a / b
        if tok == "\\sqrt":
            self.take()
            n = 2.0
            if self.peek() == "[":
                self.take()
                n = self.expr()
                self.take("]")
            v = self.group()
            if v < 0:
                raise _NotNumeric("sqrt of negative")
            return v ** (1.0 / n)
        if tok == "\\pi":
            self.take()
            return math.pi
        if tok in _FUNCS:
            self.take()
            return _FUNCS[tok](self.atom())
        raise _NotNumeric(tok)


@functools.lru_cache(maxsize=65536)
def numeric_value(s: str) -> Optional[float]:
    """Float value of a normalised answer that is a constant, else None."""
    if not s or len(s) > 200 or re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", s)):
        return None
    pct = s.endswith("%")
    body = s[:-1] if pct else s
    try:
        v = _Eval(body).run()
    except (_NotNumeric, ZeroDivisionError, OverflowError, ValueError, IndexError):
        return None
    if isinstance(v, complex) or not math.isfinite(v):
        return None
    return v / 100.0 if pct else v


def close(a: float, b: float, rel: float = 1e-4) -> bool:
    """Equal within ``rel`` of the larger magnitude (or 1e-9 absolute near 0)."""
    if a == b:
        return True
    return abs(a - b) <= rel * max(abs(a), abs(b)) or abs(a - b) < 1e-9
