"""Write small WARC files with warcio for the mining tests."""

from __future__ import annotations

import io

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


def write_warc(path, records, gzip: bool = True) -> None:
    """``records``: (url, payload bytes, content type, record type) tuples."""
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gzip)
        for url, payload, ctype, rtype in records:
            if rtype == "response":
                http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
                rec = w.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=http)
            else:
                rec = w.create_warc_record(url, rtype, payload=io.BytesIO(payload),
                                           warc_content_type=ctype)
            w.write_record(rec)
