"""Benchmark decontamination: the DeepSeekMath rule, fast enough for a crawl.

The rule (DeepSeekMath, section 2.1): any text segment that contains a
10-gram occurring in a benchmark question or answer is removed; benchmark
texts shorter than 10 grams but with at least 3 are matched exactly.

How this module reads that rule
-------------------------------
* **Grams are normalised tokens.**  Text is normalised code point by code
  point (the mapping is 1:1, so every token keeps its position in the original
  text and segments can be cut out of the *original* document):

  - Unicode compatibility folding and case folding (NFKD, then combining
    accents dropped, then ``casefold``): ``Ｘ``, ``X`` and ``x`` are one
    token; ``é`` becomes ``e``.
  - Punctuation, symbols, control characters and all whitespace are token
    separators.  ``x+y=3`` and ``x + y = 3`` and ``$x+y=3$`` all give the
    tokens ``x y 3``; a line break is a separator like a space (so a problem
    re-wrapped over several lines still matches).
  - LaTeX spacing and sizing commands (``\\,`` ``\\;`` ``\\!`` ``\\quad``
    ``\\qquad`` ``\\left`` ``\\right`` ``\\displaystyle`` ...) are blanked, and
    ``\\dfrac`` / ``\\tfrac`` read as ``\\frac``, so typesetting variants of one
    formula give the same tokens.  LaTeX braces and backslashes are
    punctuation.
  - Numbers are kept verbatim (``3.14`` is the tokens ``3 14``).  datatrove's
    default maps every number to ``0``; in mathematics the numbers are what
    makes a problem a particular problem, so doing that would remove pages
    that only share a problem *template*.
  - Chinese, Japanese kana, Thai, Lao, Khmer and Myanmar are written without
    spaces: there every character is one token (character n-grams).  A
    10-gram in Chinese is therefore ten consecutive characters (numbers and
    Latin words inside Chinese text stay whole tokens).  A segmenter would
    make grams longer and matches rarer; character grams are the
    conservative choice and need no model.

* **Segments are lines by default** (``segment="line"``): the text between two
  ``\\n``.  Extracted web text (trafilatura, WET) puts one paragraph per line,
  so a line is the smallest unit that still carries the whole contaminated
  sentence, and removing lines leaves the rest of a page intact (a forum page
  quoting a GSM8K problem keeps its other posts).  ``segment="paragraph"``
  cuts at blank lines instead, for text that wraps paragraphs over several
  lines.  A 10-gram may span segment boundaries (problems are often wrapped);
  every segment that the matching 10-gram touches is removed.
* **Short benchmark texts** (3 to 9 tokens, e.g. a MATH answer
  ``\\frac{\\sqrt{3}}{2}``) are matched against *whole segments*: a segment is
  removed when its token sequence equals the short text.  Texts under 3
  tokens (``18``) are not matched at all.
* **What is indexed**: every text field of an item that a page could quote:
  question/problem, answer, solution or rationale (GSM8K calculator
  annotations ``<<a*b=c>>`` removed, as they never appear in the wild), the
  text of the correct option for multiple choice.  See ``BENCHMARK_LAYOUT``.

Speed
-----
A batch of documents is concatenated and scanned with numpy: code points come
from one ``utf-32`` encode, table look-ups give folded code points and token
classes, token boundaries come from shifted comparisons, token hashes are
polynomial hashes computed with ``np.add.reduceat`` (mod 2^64), and n-gram
hashes are a rolling combination of token hashes.  A byte table indexed by
the top 24 bits of the n-gram hash rejects almost all n-grams with one gather;
the rest are looked up in the sorted benchmark hash array.  Every hash hit is
then checked token by token against the benchmark text, so hash collisions
never remove text.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import re
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.io import read_jsonl, write_json

try:  # datatrove is the mining engine; the core below works without it.
    from datatrove.data import Document, DocumentsPipeline
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # pragma: no cover - datatrove is in requirements.txt
    PipelineStep = object  # type: ignore[assignment,misc]

# ----------------------------------------------------------------------------
# Normalisation tables

SEP, WORD, CHAR = 0, 1, 2
_TABLE_SIZE = 0x30000  # BMP, SMP (math alphanumerics), SIP (CJK ext. B-F)
_NO_SPACE_SCRIPTS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK ext. A
    (0x4E00, 0x9FFF),  # CJK unified
    (0xF900, 0xFAFF),  # CJK compatibility
    (0x20000, 0x2FFFF),  # CJK ext. B..F
)
# LaTeX commands that only typeset (spacing, sizing, fonts): the token right
# after a backslash is dropped when it is one of these, and ``dfrac``/``tfrac``
# read as ``frac``.  ``\,`` ``\;`` ``\!`` ``\:`` ``\ `` are punctuation anyway.
_LATEX_DROP = ("quad qquad displaystyle textstyle scriptstyle left right big bigl bigr bigg biggl "
               "biggr bigm mathrm mathbf mathit textrm textbf textit text mbox operatorname "
               "hspace vspace limits nolimits").split()
_LATEX_AS_FRAC = ("dfrac", "tfrac")
_CHAR_FLAG = np.uint32(1 << 31)  # marks a CHAR token code point in the fold table
_VALUE_MASK = np.uint32((1 << 31) - 1)


@functools.lru_cache(maxsize=1)
def _tables() -> np.ndarray:
    """table[cp] = normalised code point, 0 for separators, | _CHAR_FLAG for
    characters that are tokens by themselves (scripts written without spaces).
    The last entry stands for every code point beyond the table (a separator)."""
    table = np.zeros(_TABLE_SIZE + 1, dtype=np.uint32)
    no_space = np.zeros(_TABLE_SIZE, dtype=bool)
    for lo, hi in _NO_SPACE_SCRIPTS:
        no_space[lo:hi + 1] = True
    category, normalize, combining = unicodedata.category, unicodedata.normalize, unicodedata.combining
    for c in range(_TABLE_SIZE):
        if 0xD800 <= c < 0xE000:  # surrogates: separators
            continue
        ch = chr(c)
        if c < 128:
            g = ch.lower()
        else:
            d = normalize("NFKD", ch)
            if len(d) > 1:
                d = "".join(x for x in d if not combining(x)) or d
            d = d.casefold()
            if len(d) == 1:
                g = d
            else:
                low = ch.lower()
                g = low if len(low) == 1 else ch
        if category(g)[0] in "LNM":
            o = ord(g)
            table[c] = o | (int(_CHAR_FLAG) if (no_space[c] or (o < _TABLE_SIZE and no_space[o])) else 0)
    return table


_P = 0x100000001B3  # odd, so invertible mod 2^64
_R = 0x9E3779B97F4A7C15  # n-gram combination multiplier
_U64 = np.uint64
_pow_cache: dict[str, np.ndarray] = {}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^k and P^-k (mod 2^64) for k < n, grown by doubling and cached."""
    have = _pow_cache.get("p")
    if have is None or len(have) < n:
        size = max(1 << 16, 1 << (max(n, 2) - 1).bit_length())
        p = np.full(size, _P, dtype=_U64)
        p[0] = 1
        inv = np.full(size, pow(_P, -1, 1 << 64), dtype=_U64)
        inv[0] = 1
        _pow_cache["p"] = np.cumprod(p, dtype=_U64)
        _pow_cache["inv"] = np.cumprod(inv, dtype=_U64)
    return _pow_cache["p"], _pow_cache["inv"]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


@dataclasses.dataclass
class Scan:
    """Tokens of one (possibly concatenated) text; positions are code point offsets."""

    codepoints: np.ndarray  # uint32 code points of the text
    folded: np.ndarray  # uint32 table values: folded code point (| _CHAR_FLAG), 0 at separators
    starts: np.ndarray  # int64 token start offsets
    ends: np.ndarray  # int64 token end offsets (exclusive)
    hashes: np.ndarray  # uint64 token hashes

    def token(self, i: int) -> str:
        v = self.folded[self.starts[i]:self.ends[i]] & _VALUE_MASK
        return v.tobytes().decode("utf-32-le")

    def tokens(self, lo: int, hi: int) -> tuple[str, ...]:
        return tuple(self.token(i) for i in range(lo, hi))


def _raw_token_hashes(folded: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Position-independent polynomial hash of every token (separators are 0)."""
    p, inv = _powers(len(folded))
    sums = np.add.reduceat(folded.astype(_U64) * p[:len(folded)], starts)
    return _mix(sums * inv[starts])


@functools.lru_cache(maxsize=1)
def _latex_hashes() -> tuple[np.ndarray, int]:
    words = list(_LATEX_DROP) + ["frac"]
    folded = _tables()[np.frombuffer(" ".join(words).encode("utf-32-le"), dtype=np.uint32)]
    starts = np.flatnonzero(np.diff(np.concatenate([[0], (folded != 0).view(np.int8)])) == 1)
    h = _raw_token_hashes(folded, starts)
    return np.sort(h[:-1]), int(h[-1])


def scan(text: str) -> Scan:
    """Normalise and tokenise ``text`` (see the module docstring) in numpy."""
    table = _tables()
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    f = np.take(table, cp, mode="clip")
    # Word runs: maximal runs of non-separator code points; boundaries alternate start/end.
    tok = (f != 0).view(np.int8)
    edges = np.flatnonzero(np.diff(tok, prepend=np.int8(0), append=np.int8(0)))
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) and f.max() >= _CHAR_FLAG:
        # Characters of scripts without spaces are tokens by themselves: split runs there.
        is_char = f >= _CHAR_FLAG
        cut = np.flatnonzero(is_char | np.concatenate([[False], is_char[:-1]]))  # char, or just after one
        cut = cut[tok[cut] != 0]
        pos = np.searchsorted(starts, cut)
        known = (pos < len(starts)) & (starts[np.minimum(pos, len(starts) - 1)] == cut)
        cut, pos = cut[~known], pos[~known]
        starts = np.insert(starts, pos, cut)  # stays sorted: pos are insertion points
        # a token ends where the next one starts, unless a separator came first
        nxt = np.append(starts[1:], len(f))
        run_end = ends[np.searchsorted(ends, starts, side="right")]
        ends = np.minimum(nxt, run_end)
    if len(starts) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Scan(cp, f, empty, empty, np.zeros(0, dtype=_U64))
    hashes = _raw_token_hashes(f, starts)
    # LaTeX typesetting commands: drop them, read \dfrac and \tfrac as \frac.
    after_bs = np.flatnonzero(cp[np.maximum(starts - 1, 0)] == 92)
    after_bs = after_bs[starts[after_bs] > 0]
    if len(after_bs):
        drop, frac = _latex_hashes()
        hb = hashes[after_bs]
        fr = after_bs[np.isin(hb, _latex_frac_variants())]
        if len(fr):  # drop the d/t so the token reads (and verifies) as "frac"
            f[starts[fr]] = 0
            starts = starts.copy()
            starts[fr] += 1
            hashes[fr] = _U64(frac)
        gone = after_bs[np.isin(hb, drop)]
        if len(gone):
            keep = np.ones(len(starts), dtype=bool)
            keep[gone] = False
            starts, ends, hashes = starts[keep], ends[keep], hashes[keep]
    return Scan(cp, f, starts.astype(np.int64), ends.astype(np.int64), hashes)


@functools.lru_cache(maxsize=1)
def _latex_frac_variants() -> np.ndarray:
    folded = _tables()[np.frombuffer(" ".join(_LATEX_AS_FRAC).encode("utf-32-le"), dtype=np.uint32)]
    starts = np.flatnonzero(np.diff(np.concatenate([[0], (folded != 0).view(np.int8)])) == 1)
    return _raw_token_hashes(folded, starts)


def normalize(text: str) -> str:
    """The normalised form of ``text``: its tokens joined by single spaces."""
    s = scan(text)
    return " ".join(s.token(i) for i in range(len(s.starts)))


def window_hashes(tok_hashes: np.ndarray, firsts: np.ndarray, counts: np.ndarray | int) -> np.ndarray:
    """Hash of token sequences ``tok_hashes[first:first+count]`` (one per first).

    The same function hashes document n-grams, whole short segments and the
    benchmark side, so equal token sequences always get equal hashes.
    """
    firsts = np.asarray(firsts, dtype=np.int64)
    acc = np.zeros(len(firsts), dtype=_U64)
    if np.isscalar(counts):
        for j in range(int(counts)):
            acc = acc * _U64(_R) + tok_hashes[firsts + j]
        return _mix(acc)
    counts = np.asarray(counts, dtype=np.int64)
    if len(firsts) == 0:
        return acc
    last = len(tok_hashes) - 1
    for j in range(int(counts.max())):
        more = j < counts
        nxt = acc * _U64(_R) + tok_hashes[np.minimum(firsts + j, last)]
        acc = np.where(more, nxt, acc)
    return _mix(acc)


def ngram_hashes(tok_hashes: np.ndarray, n: int) -> np.ndarray:
    """``window_hashes`` of every n-gram (start 0..m-n), with slices instead of gathers."""
    m = len(tok_hashes) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=_U64)
    acc = np.zeros(m, dtype=_U64)
    for j in range(n):
        acc = acc * _U64(_R) + tok_hashes[j:j + m]
    return _mix(acc)


# ----------------------------------------------------------------------------
# Benchmarks


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


# ----------------------------------------------------------------------------
# Index


@options
class DecontConfig:
    """Options of the decontamination stage (also the CLI flags)."""

    ngram: int = field(10, help="n of the n-grams matched against the benchmarks (paper: 10)")
    short_min: int = field(3, help="benchmark texts with short_min..ngram-1 tokens are matched "
                                   "exactly against whole segments; shorter ones are ignored")
    segment: str = field("line", choices=("line", "paragraph"),
                         help="unit removed around a hit: a line, or a blank-line separated paragraph")
    benchmark_names: tuple[str, ...] = field((), help="only these benchmarks (default: all present)")
    batch_chars: int = field(4_000_000, help="characters scanned per numpy batch")
    max_hits_listed: int = field(20, help="hits listed per document in the report")

    def __post_init__(self):
        if self.ngram < 1:
            raise ConfigError(f"ngram must be >= 1, got {self.ngram}")
        if not 1 <= self.short_min <= self.ngram:
            raise ConfigError(f"short_min must be in 1..ngram ({self.ngram}), got {self.short_min}")
        if self.segment not in ("line", "paragraph"):
            raise ConfigError(f"segment must be 'line' or 'paragraph', got {self.segment!r}")
        if self.batch_chars < 1:
            raise ConfigError(f"batch_chars must be >= 1, got {self.batch_chars}")
        self.benchmark_names = tuple(self.benchmark_names or ())


_FILTER_BITS = 24


class BenchmarkIndex:
    """Hashes of every benchmark n-gram and of every short benchmark text.

    Arrays sorted by hash hold, for each entry, which benchmark text it came
    from and at which token; candidate hits are verified against the stored
    folded benchmark text, so only real token matches count.
    """

    def __init__(self, texts: Sequence[BenchmarkText], ngram: int = 10, short_min: int = 3):
        self.texts = list(texts)
        self.ngram = ngram
        self.short_min = short_min
        sep = "\uffff"
        joined = sep.join(t.text for t in self.texts)
        lengths = np.fromiter((len(t.text) for t in self.texts), dtype=np.int64, count=len(self.texts))
        text_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]) if len(lengths) else lengths
        s = scan(joined)
        self.scan = s
        tok_text = np.searchsorted(text_starts, s.starts, side="right") - 1
        # token range of every text
        first = np.searchsorted(tok_text, np.arange(len(self.texts)), side="left")
        last = np.searchsorted(tok_text, np.arange(len(self.texts)), side="right")
        self.tok_first = first
        count = last - first
        self.text_tokens = count
        # n-grams lying inside one text
        g_hash = ngram_hashes(s.hashes, ngram)
        g_first = np.arange(len(g_hash))
        ok = tok_text[g_first] == tok_text[g_first + ngram - 1]  # inside one text
        g_first, g_hash = g_first[ok], g_hash[ok]
        order = np.argsort(g_hash, kind="stable")
        self.ngram_hash = g_hash[order]
        self.ngram_tok = g_first[order]  # first token (in self.scan) of the n-gram
        self.ngram_text = tok_text[self.ngram_tok] if len(order) else np.zeros(0, dtype=np.int64)
        short = np.flatnonzero((count >= short_min) & (count < ngram))
        sh = window_hashes(s.hashes, first[short], count[short])
        order = np.argsort(sh, kind="stable")
        self.short_hash = sh[order]
        self.short_text = short[order]
        self.filter = np.zeros(1 << _FILTER_BITS, dtype=bool)
        self.filter[(self.ngram_hash >> _U64(64 - _FILTER_BITS)).astype(np.int64)] = True
        self.ignored_texts = int(np.count_nonzero(count < short_min))

    @classmethod
    def from_dir(cls, root: str | Path, cfg: DecontConfig | None = None) -> "BenchmarkIndex":
        cfg = cfg or DecontConfig()
        return cls(load_benchmarks(root, cfg.benchmark_names), cfg.ngram, cfg.short_min)

    def summary(self) -> dict:
        per = defaultdict(int)
        for t in self.texts:
            per[t.benchmark] += 1
        return {"texts": len(self.texts), "texts_per_benchmark": dict(per),
                "ngrams": int(len(self.ngram_hash)), "unique_ngrams": int(len(np.unique(self.ngram_hash))),
                "short_texts": int(len(self.short_hash)), "ignored_texts_under_short_min": self.ignored_texts}

    def ngram_sources(self, h: int, tokens: tuple[str, ...]) -> list[int]:
        """Benchmark texts that really contain the n-gram ``tokens`` (hash ``h``)."""
        h = _U64(h)  # a Python int would make numpy convert the whole array
        lo = np.searchsorted(self.ngram_hash, h, side="left")
        hi = np.searchsorted(self.ngram_hash, h, side="right")
        out = []
        for k in range(lo, hi):
            t0 = int(self.ngram_tok[k])
            if self.scan.tokens(t0, t0 + self.ngram) == tokens:
                out.append(int(self.ngram_text[k]))
        return out

    def short_sources(self, h: int, tokens: tuple[str, ...]) -> list[int]:
        h = _U64(h)
        lo = np.searchsorted(self.short_hash, h, side="left")
        hi = np.searchsorted(self.short_hash, h, side="right")
        out = []
        for k in range(lo, hi):
            t = int(self.short_text[k])
            f = int(self.tok_first[t])
            if self.scan.tokens(f, f + int(self.text_tokens[t])) == tokens:
                out.append(t)
        return out


# ----------------------------------------------------------------------------
# Cleaning


@dataclasses.dataclass
class Hit:
    rule: str  # "ngram" or "exact"
    text_index: int  # into BenchmarkIndex.texts
    segments: tuple[int, ...]  # segment indices (within the document) removed
    match: str  # normalised matched tokens


@dataclasses.dataclass
class CleanResult:
    text: str  # the document with contaminated segments removed
    segments: int  # segments in the input document
    removed: list[int]  # indices of removed segments
    hits: list[Hit]

    @property
    def contaminated(self) -> bool:
        return bool(self.removed)


_PARA_BREAK = re.compile(r"\n[^\S\n]*\n\s*")


def _split_segments(text: str, mode: str) -> tuple[list[str], list[str]]:
    """Segments of ``text`` and the separators after each (for re-joining)."""
    if mode == "line":
        segs = text.split("\n")
        return segs, ["\n"] * (len(segs) - 1) + [""]
    segs, seps, pos = [], [], 0
    for m in _PARA_BREAK.finditer(text):
        segs.append(text[pos:m.start()])
        seps.append(m.group())
        pos = m.end()
    segs.append(text[pos:])
    seps.append("")
    return segs, seps


class Decontaminator:
    """Pure-Python/numpy core: clean strings against a ``BenchmarkIndex``."""

    def __init__(self, index: BenchmarkIndex, cfg: DecontConfig | None = None):
        self.index = index
        self.cfg = cfg or DecontConfig(ngram=index.ngram, short_min=index.short_min)
        if (self.cfg.ngram, self.cfg.short_min) != (index.ngram, index.short_min):
            raise ConfigError(f"index built for ngram={index.ngram}, short_min={index.short_min}; "
                              f"config asks ngram={self.cfg.ngram}, short_min={self.cfg.short_min}")

    def clean(self, text: str) -> CleanResult:
        return self.clean_batch([text])[0]

    def clean_batch(self, texts: Sequence[str]) -> list[CleanResult]:
        """Clean many documents with one numpy scan per ``batch_chars``."""
        out: list[CleanResult] = []
        batch: list[str] = []
        size = 0
        for t in texts:
            batch.append(t)
            size += len(t) + 1
            if size >= self.cfg.batch_chars:
                out.extend(self._clean_one_batch(batch))
                batch, size = [], 0
        if batch:
            out.extend(self._clean_one_batch(batch))
        return out

    def _clean_one_batch(self, texts: list[str]) -> list[CleanResult]:
        n = self.cfg.ngram
        idx = self.index
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        doc_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        # U+FFFF separates documents: it is neither whitespace nor a token.  (A
        # U+FFFF inside a text is replaced by U+FFFE, also a separator, same length.)
        joined = "\uffff".join(t.replace("\uffff", "\ufffe") if "\uffff" in t else t for t in texts)
        s = scan(joined)
        m = len(s.starts)
        # Segment boundaries: line breaks (or blank-line runs) and document separators.
        # Segment k of the batch lies between bounds[k-1] and bounds[k].
        if self.cfg.segment == "line":
            cp = s.codepoints
            bounds = np.flatnonzero((cp == 10) | (cp == 0xFFFF))
        else:
            paras = np.fromiter((mm.start() for mm in _PARA_BREAK.finditer(joined)), dtype=np.int64)
            bounds = np.sort(np.concatenate([paras, doc_starts[1:] - 1]))
        doc_seg0 = np.searchsorted(bounds, doc_starts, side="left")  # first segment of each doc

        def doc_of(pos):
            return np.searchsorted(doc_starts, pos, side="right") - 1

        removed: dict[int, set[int]] = defaultdict(set)
        hits: dict[int, list[Hit]] = defaultdict(list)

        # 10-gram rule: hash filter, sorted-hash look-up, then token-by-token check
        if m >= n and len(idx.ngram_hash):
            g = ngram_hashes(s.hashes, n)
            cand = np.flatnonzero(idx.filter[g >> _U64(64 - _FILTER_BITS)])
            if len(cand):
                gc = g[cand]
                pos = np.minimum(np.searchsorted(idx.ngram_hash, gc), len(idx.ngram_hash) - 1)
                cand = cand[idx.ngram_hash[pos] == gc]
            if len(cand):
                first_pos, last_pos = s.starts[cand], s.starts[cand + n - 1]
                same_doc = doc_of(first_pos) == doc_of(last_pos)
                cand, first_pos, last_pos = cand[same_doc], first_pos[same_doc], last_pos[same_doc]
                seg_a = np.searchsorted(bounds, first_pos, side="left")
                seg_b = np.searchsorted(bounds, last_pos, side="left")
                docs = doc_of(first_pos)
                for i, a, b, d in zip(cand.tolist(), seg_a.tolist(), seg_b.tolist(), docs.tolist()):
                    toks = s.tokens(i, i + n)
                    srcs = idx.ngram_sources(g[i], toks)
                    if not srcs:
                        continue  # hash collision, not a real match
                    segs = tuple(range(a - int(doc_seg0[d]), b - int(doc_seg0[d]) + 1))
                    removed[d].update(segs)
                    for t in srcs:
                        hits[d].append(Hit("ngram", t, segs, " ".join(toks)))

        # short texts: whole segments equal to a short benchmark text
        if m and len(idx.short_hash):
            seg_first = np.searchsorted(s.starts, bounds, side="right")  # first token after each bound
            first = np.concatenate([[0], seg_first])
            count = np.diff(np.concatenate([first, [m]]))
            sel = np.flatnonzero((count >= self.cfg.short_min) & (count < n))
            if len(sel):
                sh = window_hashes(s.hashes, first[sel], count[sel])
                pos = np.minimum(np.searchsorted(idx.short_hash, sh), len(idx.short_hash) - 1)
                ok = np.flatnonzero(idx.short_hash[pos] == sh)
                for k in ok.tolist():
                    seg = int(sel[k])
                    f0, c0 = int(first[seg]), int(count[seg])
                    toks = s.tokens(f0, f0 + c0)
                    srcs = idx.short_sources(sh[k], toks)
                    if not srcs:
                        continue
                    d = int(doc_of(s.starts[f0]))
                    local = seg - int(doc_seg0[d])
                    removed[d].add(local)
                    for t in srcs:
                        hits[d].append(Hit("exact", t, (local,), " ".join(toks)))

        out = []
        for d, text in enumerate(texts):
            if d not in removed:
                out.append(CleanResult(text, -1, [], []))
                continue
            segs, seps = _split_segments(text, self.cfg.segment)
            gone = removed[d]
            kept = [(sg, sp) for k, (sg, sp) in enumerate(zip(segs, seps)) if k not in gone]
            cleaned = "".join(sg + sp for sg, sp in kept[:-1]) + (kept[-1][0] if kept else "")
            out.append(CleanResult(cleaned, len(segs), sorted(gone), hits[d]))
        return out


# ----------------------------------------------------------------------------
# Report


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


# ----------------------------------------------------------------------------
# Records (jsonl rows: plain text or chat messages)


def record_texts(rec: dict, text_key: str, messages_key: str) -> list[tuple[object, str]]:
    """(address, text) of every string to clean in ``rec``.

    ``address`` is ``text_key`` or ``(messages_key, i)``; raises ``ValueError``
    with a short reason when the record has neither shape.
    """
    if text_key in rec:
        if not isinstance(rec[text_key], str):
            raise ValueError(f"field {text_key!r} is not a string")
        return [(text_key, rec[text_key])]
    if messages_key in rec:
        msgs = rec[messages_key]
        if not isinstance(msgs, list):
            raise ValueError(f"field {messages_key!r} is not a list")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise ValueError(f"{messages_key}[{i}] has no string 'content'")
            out.append(((messages_key, i), m["content"]))
        return out
    raise ValueError(f"no {text_key!r} or {messages_key!r} field")


def set_record_text(rec: dict, address, text: str) -> None:
    if isinstance(address, tuple):
        rec[address[0]][address[1]]["content"] = text
    else:
        rec[address] = text


def open_text(path: str | Path, mode: str = "rt"):
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


# ----------------------------------------------------------------------------
# datatrove step


class BenchmarkDecontamination(PipelineStep):
    """datatrove step: remove contaminated segments from ``Document.text``.

    Documents whose every segment is contaminated are dropped.  Counts go to
    datatrove stats (``documents_contaminated``, ``segments_removed``,
    ``contaminated_<benchmark>``, ``documents_dropped``); with
    ``report_folder`` each rank also writes ``decontamination_<rank>.json``.
    The index is built once per worker process from ``benchmarks_dir``.
    """

    type = "🦠 - DECONT"
    name = "🧮 benchmark 10-grams (DeepSeekMath rule)"

    def __init__(self, benchmarks_dir: str | Path, config: DecontConfig | None = None,
                 report_folder: str | Path | None = None, batch_docs: int = 1000):
        super().__init__()
        self.benchmarks_dir = str(benchmarks_dir)
        self.config = config or DecontConfig()
        self.report_folder = str(report_folder) if report_folder else None
        self.batch_docs = batch_docs
        if not Path(self.benchmarks_dir).is_dir():
            raise ConfigError(f"benchmarks folder not found: {self.benchmarks_dir}")
        self._core: Decontaminator | None = None

    @property
    def core(self) -> Decontaminator:
        if self._core is None:
            self._core = Decontaminator(BenchmarkIndex.from_dir(self.benchmarks_dir, self.config), self.config)
        return self._core

    def run(self, data: "DocumentsPipeline", rank: int = 0, world_size: int = 1) -> "DocumentsPipeline":
        if data is None:
            return
        core = self.core
        report = DecontReport(core.index, self.config.max_hits_listed)
        batch: list[Document] = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_docs:
                yield from self._process(core, batch, report)
                batch = []
        if batch:
            yield from self._process(core, batch, report)
        if self.report_folder:
            report.write(Path(self.report_folder) / f"decontamination_{rank:05d}.json")

    def _process(self, core: Decontaminator, docs: list, report: DecontReport) -> Iterator:
        results = core.clean_batch([d.text for d in docs])
        for doc, res in zip(docs, results):
            self.stat_update("documents")
            dropped = res.contaminated and not res.text.strip()
            report.add(doc.id, res, len(doc.text), dropped)
            if res.contaminated:
                benches = sorted({core.index.texts[h.text_index].benchmark for h in res.hits})
                self.stat_update("documents_contaminated")
                self.stat_update("segments_removed", value=len(res.removed))
                for b in benches:
                    self.stat_update(f"contaminated_{b}")
                doc.metadata["decontamination"] = {"segments_removed": len(res.removed), "benchmarks": benches}
                if dropped:
                    self.stat_update("documents_dropped")
                    continue
                doc.text = res.text
            yield doc
