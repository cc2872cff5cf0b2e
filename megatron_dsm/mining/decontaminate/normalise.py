"""Text normalisation and hashing shared by the benchmark index and the cleaner.

Grams are normalised tokens.  Text is normalised code point by code point
(the mapping is 1:1, so every token keeps its position in the original text
and segments can be cut out of the *original* document):

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

All of it runs in numpy over a whole batch of text: code points come from one
``utf-32`` encode, table look-ups give folded code points and token classes,
token boundaries come from shifted comparisons, token hashes are polynomial
hashes computed with ``np.add.reduceat`` (mod 2^64), and n-gram hashes are a
rolling combination of token hashes.
"""

from __future__ import annotations

import dataclasses
import functools
import unicodedata

import numpy as np

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
