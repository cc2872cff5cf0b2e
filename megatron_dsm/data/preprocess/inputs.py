"""Reading the input: files, contiguous partitions of them, and records.

``--partitions`` cuts the concatenated input into contiguous byte ranges
(not round-robin lines), so every partition can be written in input order
and the shards concatenated in order.  A record that cannot be used is not
an error: it comes back as the reason it was rejected.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
from pathlib import Path
from typing import Iterator

import orjson

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


def discover_inputs(spec: str) -> list[Path]:
    """A file, a glob, or a folder (searched recursively) -> sorted input files."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(INPUT_SUFFIXES))
        if not files:
            raise ValueError(f"--input {spec}: folder holds no {'/'.join(INPUT_SUFFIXES)} files")
        return files
    if p.is_file():
        if not p.name.endswith(INPUT_SUFFIXES):
            raise ValueError(f"--input {spec}: unsupported file type (expected {', '.join(INPUT_SUFFIXES)})")
        return [p]
    matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
    files = [m for m in matches if m.name.endswith(INPUT_SUFFIXES)]
    if not files:
        raise ValueError(f"--input {spec}: no such file, folder or matching {'/'.join(INPUT_SUFFIXES)} files")
    return files


@dataclasses.dataclass(frozen=True)
class Unit:
    """A contiguous piece of one input file: plain jsonl may be cut by bytes."""

    path: str
    start: int = 0
    end: int = -1          # -1: to the end of the file
    first_line: int = 1    # line number of the first line in the piece


def _is_plain_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".json"))


def _next_line_start(path: Path, pos: int) -> int:
    """First line start at or after ``pos`` (a cut point aligned to a newline)."""
    size = path.stat().st_size
    if pos <= 0:
        return 0
    with open(path, "rb") as f:
        f.seek(pos - 1)
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                return size
            i = chunk.find(b"\n")
            if i >= 0:
                return f.tell() - len(chunk) + i + 1


def _count_newlines(path: Path, end: int) -> int:
    n = 0
    with open(path, "rb") as f:
        left = end
        while left > 0:
            chunk = f.read(min(left, 16 << 20))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def plan_partitions(files: list[Path], partitions: int) -> list[list[Unit]]:
    """Cut the concatenated input into ``partitions`` contiguous pieces of
    about equal bytes.  Cuts inside plain jsonl move to the next line start;
    a cut inside a .gz or parquet file moves to that file's end.  Empty
    partitions are dropped, so fewer may come back."""
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    wanted = [round(total * k / partitions) for k in range(1, partitions)]
    cuts: set[int] = set()
    offset = 0
    for f, size in zip(files, sizes):
        for c in wanted:
            if offset < c < offset + size:
                local = _next_line_start(f, c - offset) if _is_plain_jsonl(f) else size
                cuts.add(offset + local)
            elif c == offset:
                cuts.add(c)
        offset += size
    cuts_sorted = sorted(c for c in cuts if 0 < c < total)
    parts: list[list[Unit]] = [[]]
    offset = 0
    for f, size in zip(files, sizes):
        if offset in cuts_sorted and parts[-1]:
            parts.append([])
        inner = [c - offset for c in cuts_sorted if offset < c < offset + size]
        bounds = [0] + inner + [size]
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            if i > 0:
                parts.append([])
            first = 1 if s == 0 else _count_newlines(f, s) + 1
            parts[-1].append(Unit(str(f), s, e, first))
        offset += size
    return [p for p in parts if p]


def _iter_lines(unit: Unit) -> Iterator[tuple[int, bytes]]:
    path = unit.path
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            for n, line in enumerate(f, start=1):
                yield n, line
        return
    with open(path, "rb") as f:
        f.seek(unit.start)
        pos = unit.start
        end = unit.end
        n = unit.first_line
        for line in f:
            if pos >= end >= 0:
                break
            pos += len(line)
            yield n, line
            n += 1


# --------------------------------------------------------------------------- records

class Reject(Exception):
    pass


def _parse_line(line: bytes, keys: list[str], max_bytes: int) -> dict:
    """One jsonl line -> {key: str | list[str]}; raises Reject with the reason."""
    if len(line) > max_bytes:
        raise Reject(f"document of {len(line)} bytes exceeds --max-document-bytes {max_bytes}")
    if not line.strip():
        raise Reject("blank line")
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as u:
            raise Reject(f"non-UTF-8 bytes at byte {u.start}") from None
        raise Reject(f"malformed JSON: {str(e).splitlines()[0]}") from None
    return _select_keys(rec, keys)


def _select_keys(rec, keys: list[str]) -> dict:
    if not isinstance(rec, dict):
        raise Reject(f"record is a JSON {type(rec).__name__}, not an object")
    out = {}
    for k in keys:
        if k not in rec:
            raise Reject(f"missing key {k!r}")
        v = rec[k]
        if isinstance(v, list) and all(isinstance(s, str) for s in v):
            if not any(v):
                raise Reject(f"empty text in key {k!r}")
        elif not isinstance(v, str):
            raise Reject(f"key {k!r} holds a {type(v).__name__}, not text")
        elif not v:
            raise Reject(f"empty text in key {k!r}")
        out[k] = v
    return out


def iter_records(unit: Unit, keys: list[str], max_bytes: int) -> Iterator[tuple[int, int, dict | str]]:
    """Yield (line, input bytes, record or reject reason) for one unit."""
    if unit.path.endswith(".parquet"):
        yield from _iter_parquet(unit, keys, max_bytes)
        return
    for n, line in _iter_lines(unit):
        try:
            yield n, len(line), _parse_line(line, keys, max_bytes)
        except Reject as r:
            yield n, len(line), str(r)


def _iter_parquet(unit: Unit, keys: list[str], max_bytes: int):
    # pyarrow only for parquet input: its import costs more than a small jsonl run
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(unit.path)
    names = set(pf.schema_arrow.names)
    missing = [k for k in keys if k not in names]
    row = 0
    for batch in pf.iter_batches(batch_size=4096, columns=[k for k in keys if k in names]):
        cols = {k: batch.column(k).to_pylist() for k in keys if k in names}
        for i in range(batch.num_rows):
            row += 1
            if missing:
                yield row, 0, f"missing key {missing[0]!r}"
                continue
            rec = {k: cols[k][i] for k in keys}
            size = sum(len(v.encode("utf-8")) if isinstance(v, str) else 0 for v in rec.values())
            if size > max_bytes:
                yield row, size, f"document of {size} bytes exceeds --max-document-bytes {max_bytes}"
                continue
            try:
                yield row, size, _select_keys(rec, keys)
            except Reject as r:
                yield row, size, str(r)
