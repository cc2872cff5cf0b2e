"""Files written whole or not at all, and JSON / JSON-lines reading.

Every writer in the project that publishes a file goes through here, so a
run killed mid-write never leaves a half-written file under the final name:
the bytes go to a temp name in the same folder (same file system, so the
rename is atomic), are flushed, and the temp file is renamed over the final
name only when complete.

* :func:`atomic_path` — a context manager handing out the temp path for
  writers that need a path of their own (csv, safetensors, fastText);
* :func:`atomic_write` — text or bytes;
* :func:`write_json` / :func:`write_jsonl` — JSON documents and records;
* :func:`replace_dir` — publish a finished folder under its final name;
* :func:`read_json` / :func:`read_jsonl` — reading with one ``file:line``
  message on the first malformed line, raised as the caller's error class so
  each CLI keeps its one-line ``error:`` handling.  Stages that must *skip
  and count* bad lines instead (preprocess_data, decontaminate) keep their
  own readers on purpose.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it to ``path`` when the
    block ends without an exception, remove it otherwise."""
    final = Path(path)
    if mkdir:
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically.
    ``fsync`` also forces the bytes to disk before the rename (for files a
    crash must never find empty, such as a checkpoint's ``latest`` file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1,
               sort_keys: bool = False) -> Path:
    """One JSON document, atomically (UTF-8, non-ASCII kept, trailing newline)."""
    return atomic_write(path, json.dumps(obj, indent=indent, sort_keys=sort_keys,
                                         ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """One JSON object per line, atomically; returns how many were written."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return n


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Publish the finished folder ``src`` as ``dst`` (an existing ``dst``
    is removed first; the rename itself is atomic)."""
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)
    return dst


def read_json(path: str | os.PathLike, *, error: type[Exception] = ValueError) -> Any:
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise error(f"{p}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_jsonl(path: str | os.PathLike, *, error: type[Exception] = ValueError,
               require_object: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line_number, object)`` for each non-blank line of a ``.jsonl`` or
    ``.jsonl.gz`` file; the first malformed line stops with ``file:line``."""
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
