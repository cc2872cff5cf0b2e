"""A deterministic 'policy' over the toy arithmetic steps of toydata.py.

Given the question and a prefix of steps, it continues from the number the
prefix last wrote — correctly, so a prefix containing a wrong step leads to
a wrong answer.  ``slippy`` makes every 4th sample (index 3, 7, ...) add 1
to the running total in its continuation, so soft Math-Shepherd labels have
known values (3/4 on good prefixes that still need a continuation)."""
import re

_NUM = re.compile(r"-?\d+")


def _question_numbers(question: str):
    a, b, d = (int(x) for x in _NUM.findall(question)[:3])
    return a, b, d


def _continue(question: str, prefix: list[str], slip: bool) -> str:
    a, b, d = _question_numbers(question)
    k = len(prefix)
    if k >= 3:
        return ""
    last = int(_NUM.findall(prefix[-1])[-1])   # the number the last step wrote
    if slip:
        last += 1
    if k == 1:
        e = last + d
        return f"{last} + {d} = {e}.\n\nThe answer is {e}."
    return f"The answer is {last}."


def complete(question: str, prefix: list[str], n: int) -> list[str]:
    return [_continue(question, prefix, False) for _ in range(n)]


def slippy(question: str, prefix: list[str], n: int) -> list[str]:
    return [_continue(question, prefix, j % 4 == 3) for j in range(n)]
