"""Reading JSON-lines files: one place for the loop every stage needs.

``read_jsonl`` yields ``(line_number, object)`` for each non-blank line of a
``.jsonl`` or ``.jsonl.gz`` file and stops at the first malformed line with
one message naming ``file:line`` — raised as the caller's own error class so
each CLI keeps its one-line ``error:`` handling.  Stages that must *skip and
count* bad lines instead (preprocess_data, decontaminate) keep their own
readers on purpose.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Iterator


def read_jsonl(path: str | os.PathLike, *, error: type[Exception] = ValueError,
               require_object: bool = True) -> Iterator[tuple[int, object]]:
    p = os.fspath(path)
    # stdlib json, not orjson: benchmark files hold escapes orjson rejects
    # (lone surrogates), and these readers are not on a hot path.
    try:
        f = gzip.open(p, "rt", encoding="utf-8") if p.endswith(".gz") else open(p, encoding="utf-8")
    except OSError as e:
        raise error(f"{p}: cannot read ({e.strerror or e})") from None
    with f:
        for lineno, line in enumerate(_lines(f, p, error), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{p}:{lineno}: invalid JSON ({e.msg})") from None
            if require_object and not isinstance(obj, dict):
                raise error(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _lines(f, path: str, error: type[Exception]):
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
