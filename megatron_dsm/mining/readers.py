"""Readers for crawled pages: WARC (HTML responses), WET (text conversions), jsonl.

Both readers are datatrove ``BaseDiskReader`` subclasses, so sharding over
files, ``limit``/``skip`` and stats come from datatrove.  datatrove's own
``WarcReader`` is not used as-is because it reads every payload whole before
looking at its size, drops undecodable records silently and stops a task with
an exception on a truncated ``.warc.gz``; here every page that is not used is
*counted* under a ``skipped_*`` stat and reading goes on.

A document's ``text`` is the raw payload; ``metadata["format"]`` says whether
it is ``html`` (to be extracted by :mod:`megatron_dsm.mining.html_to_text`) or
``text`` (WET, or jsonl with a ``text`` field).

With ``shard_offset`` set, every document also gets ``metadata["page_shard"]``:
its input file's position in the reader's file list (plus the offset), eight
digits.  The extraction stage names its output files by it, so the pages of
one input file land in one file whose name does not depend on how many tasks
ran: the page files in name order are the input order, which the dedup stages
rely on to keep the same copy of a duplicate whatever the task count.
"""

from __future__ import annotations

import re
import zlib

from datatrove.pipeline.readers.base import BaseDiskReader

MAX_PAGE_BYTES = 10 * 1024 * 1024  # pages over 10 MB are skipped (paper-scale crawls have a long tail)

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.I)

SKIP_STATS = ("skipped_truncated_file", "skipped_non_page_record", "skipped_non_html", "skipped_too_large",
              "skipped_undecodable", "skipped_empty", "skipped_bad_json", "skipped_no_content")


class TruncatedRecord(EOFError):
    """A record's block ended before its declared Content-Length (file cut short)."""


def decode_payload(payload: bytes, declared: str | None = None) -> str | None:
    """Bytes -> str: UTF-8, then the declared charset, then chardet's guess; ``None`` if none decodes."""
    tried = []
    for enc in ("utf-8", declared):
        if not enc or enc.lower() in tried:
            continue
        tried.append(enc.lower())
        try:
            return payload.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    try:
        import cchardet

        guess = cchardet.detect(payload[:65536]).get("encoding")
    except ImportError:  # faust-cchardet is in requirements; without it only the two tries above apply
        guess = None
    if guess and guess.lower() not in tried:
        try:
            return payload.decode(guess)
        except (UnicodeDecodeError, LookupError):
            return None
    return None


def stat_total(step, name: str) -> int:
    """Count recorded under ``name`` by a datatrove step (0 when never updated)."""
    stats = step.stats.stats
    return int(stats[name].total) if name in stats else 0


def skip_counts(step) -> dict[str, int]:
    return {k: stat_total(step, k) for k in SKIP_STATS if stat_total(step, k)}


class _PageShards:
    """Mixin of the page readers: their options (pages over ``max_page_bytes``
    are skipped) and ``metadata["page_shard"]`` from the position of the
    document's file in the reader's file list."""

    shard_offset: int | None = None
    _positions: dict[str, int] | None = None

    def __init__(self, data_folder, glob_pattern: str | None = None, max_page_bytes: int = MAX_PAGE_BYTES,
                 shard_offset: int | None = None, **kw):
        super().__init__(data_folder, glob_pattern=glob_pattern, **kw)
        self.max_page_bytes = max_page_bytes
        self.shard_offset = shard_offset

    def page_shard(self, filepath: str) -> str:
        if self._positions is None:
            if self.paths_file:
                with open(self.paths_file, encoding="utf-8") as f:
                    files = [ln.strip() for ln in f if ln.strip()]
            else:
                files = self.data_folder.list_files(recursive=self.recursive, glob_pattern=self.glob_pattern)
            self._positions = {p: i for i, p in enumerate(files)}
        return f"{self.shard_offset + self._positions[filepath]:08d}"

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int):
        if self.shard_offset is not None:
            data["page_shard"] = self.page_shard(source_file)
        return super().get_document_from_dict(data, source_file, id_in_file)


class WarcPageReader(_PageShards, BaseDiskReader):
    """WARC ``response`` records with HTML payloads and WET ``conversion`` records.

    Request, metadata, warcinfo and resource records, and responses whose
    payload is not HTML, are counted and skipped; a truncated or corrupt gzip
    member ends that file (counted once as ``skipped_truncated_file``) and the
    documents read before it are kept.
    """

    name = "WARC/WET pages"
    _requires_dependencies = ["warcio"]

    def read_file(self, filepath: str):
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed

        with self.data_folder.open(filepath, "rb") as f:
            it = ArchiveIterator(f)
            ri = 0
            while True:
                try:
                    record = next(it)  # ArchiveIterator is its own iterator (keeps .offset)
                    data = self._page(record)
                except StopIteration:
                    # warcio stops quietly when a file ends inside a record's headers: bytes left over
                    if getattr(it, "offset", None) is not None and it.offset < _size(f):
                        self.stat_update("skipped_truncated_file")
                    return
                except (EOFError, zlib.error, ArchiveLoadFailed, OSError, ValueError) as e:
                    self.stat_update("skipped_truncated_file")
                    from datatrove.utils.logging import logger

                    logger.warning(f"{filepath}: unreadable after record {ri} ({type(e).__name__}: {e}); "
                                   f"skipping the rest of the file")
                    return
                ri += 1
                if data is None:
                    continue
                doc = self.get_document_from_dict(data, filepath, ri)
                if doc is not None:
                    yield doc

    def _page(self, record) -> dict | None:
        rtype = record.rec_type
        if rtype not in ("response", "conversion"):
            self.stat_update("skipped_non_page_record")
            return None
        headers = record.rec_headers
        declared = None
        if rtype == "response":
            ctype = ""
            if record.http_headers is not None:
                ctype = record.http_headers.get_header("Content-Type") or ""
            ctype = ctype or headers.get_header("WARC-Identified-Payload-Type") or ""
            if not any(t in ctype.lower() for t in _HTML_TYPES):
                self.stat_update("skipped_non_html")
                return None
            m = _CHARSET.search(ctype)
            declared = m.group(1) if m else None
        length = headers.get_header("Content-Length")
        if length and length.isdigit() and int(length) > self.max_page_bytes + 65536:
            self.stat_update("skipped_too_large")
            return None
        payload = record.content_stream().read(self.max_page_bytes + 1)
        if len(payload) > self.max_page_bytes:
            self.stat_update("skipped_too_large")
            return None
        # warcio returns a short payload without error when the file ends inside a record
        if getattr(record.raw_stream, "limit", 0) > 0:
            raise TruncatedRecord(f"record {headers.get_header('WARC-Target-URI')} shorter than its Content-Length")
        if not payload.strip():
            self.stat_update("skipped_empty")
            return None
        text = decode_payload(payload, declared)
        if text is None:
            self.stat_update("skipped_undecodable")
            return None
        if not text.strip():
            self.stat_update("skipped_empty")
            return None
        url = headers.get_header("WARC-Target-URI")
        return {"text": text, "id": headers.get_header("WARC-Record-ID") or None, "url": url,
                "date": headers.get_header("WARC-Date"), "format": "html" if rtype == "response" else "text"}

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int):
        if not data.get("id"):
            data["id"] = f"{source_file}/{id_in_file}"
        return super().get_document_from_dict(data, source_file, id_in_file)


def _size(f) -> int:
    pos = f.tell()
    f.seek(0, 2)
    end = f.tell()
    f.seek(pos)
    return end


class JsonlPageReader(_PageShards, BaseDiskReader):
    """jsonl(.gz) pages with ``url`` and ``text`` or ``html`` (other fields kept in metadata).

    Lines that are not JSON objects, or that have neither a non-empty ``text``
    nor ``html`` string, are counted and skipped.
    """

    name = "jsonl pages"
    _requires_dependencies = ["orjson"]

    def read_file(self, filepath: str):
        import orjson

        with self.data_folder.open(filepath, "rb", compression="infer") as f:
            li = 0
            while True:
                try:
                    line = f.readline()
                except (EOFError, zlib.error, OSError) as e:
                    self.stat_update("skipped_truncated_file")
                    from datatrove.utils.logging import logger

                    logger.warning(f"{filepath}: unreadable after line {li} ({type(e).__name__}); skipping the rest")
                    return
                if not line:
                    return
                li += 1
                if not line.strip():
                    continue
                if len(line) > self.max_page_bytes:
                    self.stat_update("skipped_too_large")
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    self.stat_update("skipped_bad_json")
                    continue
                if not isinstance(row, dict):
                    self.stat_update("skipped_bad_json")
                    continue
                data = self._page(row, filepath, li)
                if data is None:
                    continue
                doc = self.get_document_from_dict(data, filepath, li)
                if doc is not None:
                    yield doc

    def _page(self, row: dict, filepath: str, li: int) -> dict | None:
        html, text = row.pop("html", None), row.pop("text", None)
        if isinstance(text, str) and text.strip():
            row["text"], row["format"] = text, "text"
        elif isinstance(html, str) and html.strip():
            row["text"], row["format"] = html, "html"
        else:
            self.stat_update("skipped_empty" if (text is not None or html is not None) else "skipped_no_content")
            return None
        rid = row.pop("id", None)
        row["id"] = str(rid) if rid is not None else f"{filepath}/{li}"
        # a nested "metadata" object would be merged by datatrove's adapter; keep it whole instead
        if "metadata" in row:
            row["source_metadata"] = row.pop("metadata")
        return row
