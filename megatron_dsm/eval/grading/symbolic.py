"""The symbolic path: sympy ``parse_latex`` and simplification in worker
processes with a per-call timeout, so a pathological expression costs a
bounded time and never blocks the caller.

sympy's LaTeX parser needs antlr4-python3-runtime 4.11.0 exactly; with
another version every ``parse_latex`` raises and a naive grader would turn
that into "wrong answer" silently.  The version is checked at import and the
module refuses to load.
"""

from __future__ import annotations

import functools
import importlib.metadata
import multiprocessing as mp
import random
import threading
from collections import Counter
from typing import Optional

REQUIRED_ANTLR = "4.11.0"


def check_antlr() -> None:
    """Refuse to load with an antlr runtime that sympy's parse_latex cannot use."""
    try:
        ver = importlib.metadata.version("antlr4-python3-runtime")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("megatron_dsm.eval.grading needs antlr4-python3-runtime=="
                          f"{REQUIRED_ANTLR} for sympy parse_latex; it is not installed") from None
    if ver != REQUIRED_ANTLR:
        raise ImportError(f"megatron_dsm.eval.grading: antlr4-python3-runtime is {ver}, sympy's "
                          f"parse_latex needs exactly {REQUIRED_ANTLR} (other versions make it "
                          "fail on every input, which would grade right answers as wrong)")


check_antlr()

# Counters for what the grader had to do, on every path from numeric to
# symbolic (tests and the throughput benchmark read them; a run with many
# symbolic timeouts deserves a look).
STATS: Counter = Counter()


def _symbolic_worker(conn) -> None:
    """Worker loop: receive (a, b), answer True / False / 'parse_error:...'."""
    # sympy is imported here, in the worker process: the grader itself never
    # runs it, and importing it would cost every process that grades.
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
            conn.send(_sympy_same(sympy, ea, eb))
        except Exception as e:  # noqa: BLE001
            conn.send(f"error:{type(e).__name__}")


def _sympy_same(sympy, ea, eb) -> bool:
    """Are two parsed expressions (or two equations) the same?"""
    if isinstance(ea, sympy.Equality) or isinstance(eb, sympy.Equality):
        if not (isinstance(ea, sympy.Equality) and isinstance(eb, sympy.Equality)):
            return False
        da, db = ea.lhs - ea.rhs, eb.lhs - eb.rhs
        ok = sympy.simplify(da - db) == 0 or sympy.simplify(da + db) == 0
        if not ok and db != 0:
            q = sympy.simplify(da / db)
            ok = q.is_number and q != 0
        return bool(ok)
    diff = sympy.simplify(ea - eb)
    if diff == 0:
        return True
    free = sorted(diff.free_symbols, key=str)
    if not free:
        try:
            return bool(abs(complex(sympy.N(diff))) < 1e-6 * max(1.0, abs(complex(sympy.N(ea)))))
        except (TypeError, ValueError):
            return False
    # numeric spot checks decide what simplify could not prove
    rng = random.Random(0)
    for _ in range(5):
        sub = {s: sympy.Float(rng.uniform(0.5, 2.5)) for s in free}
        try:
            va, vb = complex(ea.evalf(subs=sub)), complex(eb.evalf(subs=sub))
        except (TypeError, ValueError):
            return False
        if abs(va - vb) > 1e-6 * max(1.0, abs(va)):
            return False
    return True


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


@functools.lru_cache(maxsize=16384)
def symbolic_equiv(a: str, b: str) -> Optional[bool]:
    """The shared pool's answer for two normalised answers, remembered."""
    return _pool().equiv(a, b)
