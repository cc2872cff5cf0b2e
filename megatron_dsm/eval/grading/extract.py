"""Finding the final answer (or the chosen letters) in a completion."""

from __future__ import annotations

import re
from typing import Optional

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")


def braced(s: str, i: int) -> Optional[tuple[str, int]]:
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
            got = braced(text, j)
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
HASH_RE = re.compile(r"####\s*(.+)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def strip_dollars(s: str) -> str:
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
        return strip_dollars(m[-1].group(1))
    a = _answer_after_phrase(text)
    if a:
        return strip_dollars(a)
    m = list(HASH_RE.finditer(text))
    if m:
        return m[-1].group(1).strip()
    nums = _NUMBER_RE.findall(text)
    if nums:
        return nums[-1].rstrip(".")
    return None


# \text{...} and friends: their content is the answer text
TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|textnormal|mathbf)\{([^{}]*)\}")

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
    seg = TEXT_CMD_RE.sub(r"\1", seg)
    return "".join(sorted(set(re.findall(r"(?<![A-Za-z])([A-E])(?![A-Za-z])", seg))))
