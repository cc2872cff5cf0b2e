"""Answer grading: extraction, normalisation, equivalence.

This is both the evaluation grader and GRPO's rule reward, so it has to be
right, fast and never hang.  The order of checks is fixed and cheap first:

1. normalised string equality;
2. numeric: plain numbers, fractions, percentages, and *constant* LaTeX
   expressions (``\\frac``, ``\\sqrt``, ``\\pi``, powers, implicit products)
   evaluated by a small in-process parser, compared at relative tolerance
   1e-4 - this decides the large majority of pairs, right or wrong, in
   microseconds;
3. structure: tuples / intervals / sets / matrices element-wise (interval
   brackets must match), equations (``x=3`` vs ``3``, ``y=2x+1`` vs
   ``y=1+2x``);
4. only when nothing above could decide (free variables, unusual LaTeX):
   sympy ``parse_latex`` + simplification in a worker process with a per-call
   timeout, so a pathological expression costs a bounded time and never
   blocks the caller.

``grade(completion, reference)`` extracts the model's final answer and
compares it with the reference answer.  ``grade(..., grader="math_verify")``
uses the math-verify package instead.

sympy's LaTeX parser needs antlr4-python3-runtime 4.11.0 exactly; with
another version every ``parse_latex`` raises and a naive grader would turn
that into "wrong answer" silently.  We check the version at import and
refuse to load.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import multiprocessing as mp
import re
import threading
from collections import Counter
from typing import Optional

REQUIRED_ANTLR = "4.11.0"


def _check_antlr() -> None:
    try:
        ver = importlib.metadata.version("antlr4-python3-runtime")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("megatron_dsm.eval.grading needs antlr4-python3-runtime=="
                          f"{REQUIRED_ANTLR} for sympy parse_latex; it is not installed") from None
    if ver != REQUIRED_ANTLR:
        raise ImportError(f"megatron_dsm.eval.grading: antlr4-python3-runtime is {ver}, sympy's "
                          f"parse_latex needs exactly {REQUIRED_ANTLR} (other versions make it "
                          "fail on every input, which would grade right answers as wrong)")


_check_antlr()

# Counters for what the grader had to do (tests and the throughput benchmark
# read them; a run with many symbolic timeouts deserves a look).
STATS: Counter = Counter()

# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")


def _braced(s: str, i: int) -> Optional[tuple[str, int]]:
    """Content of the brace group opening at s[i] == '{' and the index after it."""
    if i >= len(s) or s[i] != "{":
        return None
    depth = 0
    for j in range(i, len(s)):
        c = s[j]
        if c == "\\" and j + 1 < len(s) and s[j + 1] in "{}":
            continue
        if c == "{" and (j == 0 or s[j - 1] != "\\"):
            depth += 1
        elif c == "}" and (j == 0 or s[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return s[i + 1:j], j + 1
    return None


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces ok),
    or of ``\\boxed 5`` (argument without braces)."""
    matches = list(_BOX_RE.finditer(text))
    for m in reversed(matches):
        j = m.end()
        if j < len(text) and text[j] == "{":
            got = _braced(text, j)
            if got is not None:
                return got[0]
        elif m.group(0).startswith("\\boxed") and j > m.start() + 6:   # "\boxed 5"
            tail = re.match(r"[^\s$.,]+", text[j:])
            if tail:
                return tail.group(0)
    return None


_FINAL_RE = re.compile(r"Final Answer:\s*The final answer is\s*(.+?)\.?\s*I hope it is correct",
                       re.S | re.I)
_ANSWER_IS_RE = re.compile(r"(?:the|final|my)\s+answer\s+is\s*:?\s*", re.I)
_HASH_RE = re.compile(r"####\s*(.+)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _strip_dollars(s: str) -> str:
    s = s.strip()
    m = re.fullmatch(r"\$+(.*?)\$+", s, re.S)
    if m:
        s = m.group(1)
    return s.strip()


def _answer_after_phrase(text: str) -> Optional[str]:
    ms = list(_ANSWER_IS_RE.finditer(text))
    if not ms:
        return None
    rest = text[ms[-1].end():]
    boxed = last_boxed(rest)
    if boxed is not None:
        return boxed
    rest = rest.strip()
    if rest.startswith("$"):
        m = re.match(r"\$+(.+?)\$+", rest, re.S)
        if m:
            return m.group(1).strip()
    # up to the end of the line / sentence; a '.' followed by a digit is a decimal point
    m = re.match(r"(.+?)(?:\.(?!\d)\s*|\n|$)", rest)
    return m.group(1).strip() if m else None


def extract_answer(text: str) -> Optional[str]:
    """The final answer stated in a completion, or None.

    Priority: last ``\\boxed{}``/``\\fbox{}``; "Final Answer: The final answer
    is $X$"; "The answer is X"; ``#### X``; last number in the text.
    """
    if not text:
        return None
    b = last_boxed(text)
    if b is not None:
        return b.strip()
    m = list(_FINAL_RE.finditer(text))
    if m:
        return _strip_dollars(m[-1].group(1))
    a = _answer_after_phrase(text)
    if a:
        return _strip_dollars(a)
    m = list(_HASH_RE.finditer(text))
    if m:
        return m[-1].group(1).strip()
    nums = _NUMBER_RE.findall(text)
    if nums:
        return nums[-1].rstrip(".")
    return None


_CHOICE_RE = [
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?\(?\$?\\?(?:text\{)?([A-E])\b", re.I),
    re.compile(r"^\s*\(?([A-E])\)?(?:[.:)\s]|$)"),
    re.compile(r"\(([A-E])\)"),
]


def extract_choice(text: str) -> Optional[str]:
    """Multiple-choice letter A-E from a completion or extracted answer."""
    if text is None:
        return None
    b = last_boxed(text)
    if b is not None:
        text = b
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    for rx in _CHOICE_RE:
        ms = list(rx.finditer(text))
        if ms:
            return ms[-1].group(1).upper()
    return None


def extract_choices(text: str) -> str:
    """Letters of a multi-select answer ("A, D" / "\\boxed{AD}") as a sorted string."""
    if not text:
        return ""
    seg = last_boxed(text) or _answer_after_phrase(text) or ""
    seg = _TEXT_RE.sub(r"\1", seg)
    return "".join(sorted(set(re.findall(r"(?<![A-Za-z])([A-E])(?![A-Za-z])", seg))))


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

_UNIT_WORDS = (
    r"(?:square\s+|cubic\s+|sq\.?\s+)?(?:units?|cm|m|km|mm|in|inch(?:es)?|ft|feet|foot|yards?|yd|miles?|mi|"
    r"meters?|centimeters?|kilometers?|millimeters?|grams?|g|kg|kilograms?|pounds?|lbs?|ounces?|oz|"
    r"seconds?|sec|s|minutes?|min|hours?|hrs?|h|days?|weeks?|months?|years?|"
    r"dollars?|cents?|degrees?|mph|students?|people|cookies|marbles|points?|"
    r"liters?|l|ml|gallons?|cups?)"
)
_UNIT_TAIL_RE = re.compile(r"(?<=[\d}])\s*(?:\\(?:text|mbox|mathrm)\{\s*)?" + _UNIT_WORDS +
                           r"\}?(?:\^\{?[23]\}?)?\s*$", re.I)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|textnormal|mathbf)\{([^{}]*)\}")


def _fix_fracs(s: str) -> str:
    # \frac12 -> \frac{1}{2}; \frac1{2} -> \frac{1}{2}; \frac{1}2 -> \frac{1}{2}
    s = re.sub(r"\\frac\s*(\w)\s*(\w)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\w)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\w)", r"\\frac\1{\2}", s)
    s = re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", s)
    return s


@functools.lru_cache(maxsize=65536)
def normalize_answer(ans: Optional[str]) -> str:
    """Canonical string form of an answer (idempotent)."""
    if ans is None:
        return ""
    s = str(ans).strip()
    s = s.replace("\n", " ").replace("~", " ")
    s = re.sub(r"(?<!\\)\\[,!;:]", "", s)      # thin spaces (but not the row break "\\")
    s = re.sub(r"(?<!\\)\\ ", " ", s)
    s = _strip_dollars(s)
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
    # degrees
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("°", "").replace("\\circ", "")
    s = re.sub(r"\s*(?:\\text\{\s*)?degrees?\}?\s*$", "", s)
    # units (text or plain words trailing a number)
    for _ in range(2):
        s = _UNIT_TAIL_RE.sub("", s).strip()
    # \text{...}: keep the content
    s = _TEXT_RE.sub(r"\1", s)
    s = s.strip()
    # percent
    s = s.replace("\\%", "%").replace("\\percent", "%")
    # thousands separators: 1,000,000 -> 1000000 (only well-formed groups)
    s = re.sub(r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d])", lambda m: m.group(1) + m.group(2).replace(",", ""), s)
    s = re.sub(r"(?<=\d)\\\s*(?=\d{3})", "", s)   # 10\,000 after \, removal leaves "10 000"?
    s = re.sub(r"(?<=\d) (?=\d{3}\b)", "", s)
    s = _fix_fracs(s)
    s = s.replace(" ", "")
    s = s.rstrip(".")
    # leading "x=" / "k =" for a single variable
    s = re.sub(r"^\.(\d)", r"0.\1", s)
    s = re.sub(r"(?<![\d.])(\d+)\.0+(?![\d])", r"\1", s)          # 3.0 -> 3
    s = re.sub(r"(?<![\d.])(\d+\.\d*?[1-9])0+(?![\d])", r"\1", s)  # 2.50 -> 2.5
    if s.startswith("{") and s.endswith("}") and _braced(s, 0) == (s[1:-1], len(s)):
        s = s[1:-1]
    return s


# ---------------------------------------------------------------------------
# Numeric fast path: evaluate constant LaTeX / plain expressions
# ---------------------------------------------------------------------------

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
def _numeric_value(s: str) -> Optional[float]:
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


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    if a == b:
        return True
    return abs(a - b) <= rel * max(abs(a), abs(b)) or abs(a - b) < 1e-9


# ---------------------------------------------------------------------------
# Structure: tuples, intervals, sets, matrices, equations
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Symbolic path: sympy in worker processes with a per-call timeout
# ---------------------------------------------------------------------------

def _symbolic_worker(conn) -> None:
    """Worker loop: receive (a, b), answer True / False / 'parse_error:...'."""
    import sympy
    from sympy.parsing.latex import parse_latex

    def parse(s):
        s = s.replace("\\cdot", "*").replace("\\times", "*")
        return parse_latex(s)

    try:  # the first parse loads the antlr runtime: part of start-up, not of a call
        parse("1")
    except Exception:  # noqa: BLE001 - a broken parser shows up as parse errors per call
        pass
    try:
        conn.send("ready")
        _symbolic_loop(conn, sympy, parse)
    except (BrokenPipeError, EOFError):
        return   # the pool closed the pipe (timeout or shutdown): nothing to report


def _symbolic_loop(conn, sympy, parse) -> None:
    while True:
        try:
            a, b = conn.recv()
        except EOFError:
            return
        try:
            try:
                ea, eb = parse(a), parse(b)
            except Exception as e:  # noqa: BLE001 - reported, not swallowed
                conn.send(f"parse_error:{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            if isinstance(ea, sympy.Equality) or isinstance(eb, sympy.Equality):
                if isinstance(ea, sympy.Equality) and isinstance(eb, sympy.Equality):
                    da, db = ea.lhs - ea.rhs, eb.lhs - eb.rhs
                    ok = sympy.simplify(da - db) == 0 or sympy.simplify(da + db) == 0
                    if not ok and db != 0:
                        q = sympy.simplify(da / db)
                        ok = q.is_number and q != 0
                    conn.send(bool(ok))
                else:
                    conn.send(False)
                continue
            diff = sympy.simplify(ea - eb)
            if diff == 0:
                conn.send(True)
                continue
            free = sorted(diff.free_symbols, key=str)
            if not free:
                try:
                    conn.send(bool(abs(complex(sympy.N(diff))) < 1e-6 * max(1.0, abs(complex(sympy.N(ea))))))
                except (TypeError, ValueError):
                    conn.send(False)
                continue
            # numeric spot checks decide what simplify could not prove
            import random
            rng = random.Random(0)
            same = True
            for _ in range(5):
                sub = {s: sympy.Float(rng.uniform(0.5, 2.5)) for s in free}
                try:
                    va, vb = complex(ea.evalf(subs=sub)), complex(eb.evalf(subs=sub))
                except (TypeError, ValueError):
                    same = False
                    break
                if abs(va - vb) > 1e-6 * max(1.0, abs(va)):
                    same = False
                    break
            conn.send(same)
        except Exception as e:  # noqa: BLE001
            conn.send(f"error:{type(e).__name__}")


class SymbolicPool:
    """Worker processes running sympy; a call that exceeds its timeout kills
    its worker (the only way to stop sympy) and a fresh one replaces it."""

    def __init__(self, workers: int = 1, timeout: float = 5.0, startup_timeout: float = 300.0):
        self.timeout = timeout
        # Start-up (spawn + importing sympy and antlr) is waited for apart from
        # the per-call timeout: on a loaded machine it can take longer than a
        # call's budget, and killing a worker that is still importing would
        # make every later call time out too.
        self.startup_timeout = startup_timeout
        self._ctx = mp.get_context("spawn")
        self._idle: list = []
        self._lock = threading.Lock()
        self._sem = threading.Semaphore(workers)

    def _start(self):
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_symbolic_worker, args=(child,), daemon=True)
        p.start()
        child.close()
        try:
            ok = parent.poll(self.startup_timeout) and parent.recv() == "ready"
        except (EOFError, OSError):
            ok = False
        if not ok:
            p.kill()
            p.join()
            parent.close()
            return None
        return p, parent

    def equiv(self, a: str, b: str, timeout: Optional[float] = None) -> Optional[bool]:
        """True/False, or None when parsing failed or time ran out."""
        timeout = self.timeout if timeout is None else timeout
        with self._sem:
            with self._lock:
                w = self._idle.pop() if self._idle else None
            if w is None or not w[0].is_alive():
                w = self._start()
                if w is None:
                    STATS["symbolic_start_timeout"] += 1
                    return None
            p, conn = w
            try:
                conn.send((a, b))
                ready = conn.poll(timeout)
                res = conn.recv() if ready else None
            except (EOFError, OSError):  # the worker died (EOF, reset or broken pipe)
                p.kill()
                p.join()
                conn.close()
                STATS["symbolic_error"] += 1
                return None
            if ready:
                with self._lock:
                    self._idle.append(w)
            else:
                p.kill()
                p.join()
                conn.close()
                STATS["symbolic_timeout"] += 1
                return None
        if isinstance(res, str):
            STATS["symbolic_" + res.split(":")[0]] += 1
            return None
        return res

    def close(self):
        with self._lock:
            for p, conn in self._idle:
                conn.close()
                p.kill()
                p.join()
            self._idle.clear()


_POOL: Optional[SymbolicPool] = None
_POOL_LOCK = threading.Lock()


def _pool() -> SymbolicPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = SymbolicPool(workers=2)
        return _POOL


# ---------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------

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
    va, vb = _numeric_value(a), _numeric_value(b)
    if va is not None and vb is not None:
        STATS["numeric"] += 1
        if _close(va, vb):
            return True
        # "50%" vs "50": the same answer with or without the percent sign
        if a.endswith("%") != b.endswith("%"):
            return _close(va * 100, vb) if a.endswith("%") else _close(va, vb * 100)
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
    got = _symbolic_cached(a, b)
    return bool(got)


@functools.lru_cache(maxsize=16384)
def _symbolic_cached(a: str, b: str) -> Optional[bool]:
    return _pool().equiv(a, b)


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
    m = list(_HASH_RE.finditer(r))
    if m:
        return m[-1].group(1).strip()
    return r


def _grade_math_verify(completion: str, reference: str) -> bool:
    from math_verify import parse, verify
    gold = parse("$" + reference + "$")
    pred = parse(completion)
    return bool(verify(gold, pred))


def grade(completion: str, reference: str, *, grader: str = "dsm") -> bool:
    """Extract the final answer of ``completion`` and compare with ``reference``.

    ``grader``: ``"dsm"`` (this module) or ``"math_verify"``.
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
