"""jsonl records to clean: a plain text field, or the messages of a chat."""

from __future__ import annotations

import gzip
from pathlib import Path


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


def open_text(path: str | Path, mode: str = "rt", *, gz: bool | None = None):
    """A text file, gzip-compressed when ``gz`` (default: when ``path`` ends
    in ``.gz``; a temp name for a ``.gz`` output must say so itself)."""
    path = str(path)
    if path.endswith(".gz") if gz is None else gz:
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")
