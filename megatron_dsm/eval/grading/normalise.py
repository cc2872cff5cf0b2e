"""The canonical string form of an answer: what equal answers share once
LaTeX spacing, dollars, units, degrees, thousands separators and trailing
zeros are gone."""

from __future__ import annotations

import functools
import re
from typing import Optional

from megatron_dsm.eval.grading.extract import TEXT_CMD_RE, braced, strip_dollars

_UNIT_WORDS = (
    r"(?:square\s+|cubic\s+|sq\.?\s+)?(?:units?|cm|m|km|mm|in|inch(?:es)?|ft|feet|foot|yards?|yd|miles?|mi|"
    r"meters?|centimeters?|kilometers?|millimeters?|grams?|g|kg|kilograms?|pounds?|lbs?|ounces?|oz|"
    r"seconds?|sec|s|minutes?|min|hours?|hrs?|h|days?|weeks?|months?|years?|"
    r"dollars?|cents?|degrees?|mph|students?|people|cookies|marbles|points?|"
    r"liters?|l|ml|gallons?|cups?)"
)
_UNIT_TAIL_RE = re.compile(r"(?<=[\d}])\s*(?:\\(?:text|mbox|mathrm)\{\s*)?" + _UNIT_WORDS +
                           r"\}?(?:\^\{?[23]\}?)?\s*$", re.I)


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
    s = strip_dollars(s)
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
    s = TEXT_CMD_RE.sub(r"\1", s)
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
    if s.startswith("{") and s.endswith("}") and braced(s, 0) == (s[1:-1], len(s)):
        s = s[1:-1]
    return s
