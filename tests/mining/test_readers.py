"""Readers skip and count bad input (truncated gzip, non-HTML, undecodable, empty, > 10 MB); never crash."""

import gzip
import json
import random

import pytest

from megatron_dsm.mining.readers import JsonlPageReader, WarcPageReader, decode_payload, skip_counts, stat_total
from warc_pages import write_warc

GOOD = b"<html><body><p>Hello world, a page of text about numbers.</p></body></html>"


def read(reader):
    return list(reader.run())


def test_warc_bad_records_are_skipped_and_counted(tmp_path):
    big = b"<html><body>" + b"x" * (10 * 1024 * 1024 + 10) + b"</body></html>"
    write_warc(tmp_path / "a.warc.gz", [
        ("https://a.org/1", GOOD, "text/html; charset=utf-8", "response"),
        ("https://a.org/img.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "image/png", "response"),
        ("https://a.org/bad", b"<html>" + bytes(range(128, 256)) * 4 + b"</html>", "text/html", "response"),
        ("https://a.org/empty", b"", "text/html", "response"),
        ("https://a.org/big", big, "text/html", "response"),
        ("https://a.org/2", GOOD.replace(b"Hello", b"Bye"), "text/html", "response"),
        ("https://a.org/req", b"GET / HTTP/1.1\r\n\r\n", "application/http; msgtype=request", "request"),
        ("https://a.org/wet", "Plain extracted text é".encode("utf-8"), "text/plain", "conversion"),
    ])
    r = WarcPageReader(str(tmp_path), glob_pattern="*.warc.gz")
    docs = read(r)
    assert [d.metadata["url"] for d in docs] == ["https://a.org/1", "https://a.org/2", "https://a.org/wet"]
    assert [d.metadata["format"] for d in docs] == ["html", "html", "text"]
    assert docs[2].text == "Plain extracted text é"
    assert skip_counts(r) == {"skipped_non_html": 1, "skipped_undecodable": 1, "skipped_empty": 1,
                              "skipped_too_large": 1, "skipped_non_page_record": 1}


@pytest.mark.parametrize("where", ["payload", "headers"])
def test_truncated_warc_keeps_records_before_the_cut(tmp_path, where):
    rng = random.Random(0)
    recs = [(f"https://t.org/{i}", GOOD + bytes(rng.choice(b"abcdef0123456789") for _ in range(6000)),
             "text/html", "response") for i in range(3)]
    write_warc(tmp_path / "full.warc.gz", recs)
    data = (tmp_path / "full.warc.gz").read_bytes()
    (tmp_path / "full.warc.gz").unlink()
    # the third gzip member starts at 2/3 of the file (equal records); cut 20 bytes in, or near the end
    third = data.rfind(b"\x1f\x8b\x08")
    cut = third + 20 if where == "headers" else len(data) - 300
    (tmp_path / "cut.warc.gz").write_bytes(data[:cut])
    r = WarcPageReader(str(tmp_path), glob_pattern="*.warc.gz")
    docs = read(r)
    assert len(docs) == 2
    assert [d.metadata["url"] for d in docs] == [f"https://t.org/{i}" for i in range(len(docs))]
    assert stat_total(r, "skipped_truncated_file") == 1
    # garbage that is not gzip at all is one truncated/corrupt file too, not a crash
    (tmp_path / "cut.warc.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    r2 = WarcPageReader(str(tmp_path), glob_pattern="*.warc.gz")
    assert read(r2) == [] and stat_total(r2, "skipped_truncated_file") == 1


def test_real_warc_wet_wat_files(shared_data):
    r = WarcPageReader(str(shared_data / "web" / "warc"))
    docs = read(r)
    urls = [d.metadata["url"] for d in docs]
    assert "http://localhost:8000/math.html" in urls
    wet = [d for d in docs if d.metadata["format"] == "text"]
    assert [d.metadata["url"] for d in wet] == ["https://an.wikipedia.org/wiki/Escopete"]
    # warcinfo, request, metadata (incl. the whole WAT file) and resource records are counted, not read
    assert stat_total(r, "skipped_non_page_record") > 0 and len(docs) == 43


def test_decode_payload_fallbacks():
    assert decode_payload("café".encode("utf-8")) == "café"
    assert decode_payload("café".encode("latin-1"), "iso-8859-1") == "café"
    assert decode_payload("Привет мир, это текст на русском языке".encode("cp1251")) is not None
    assert decode_payload(bytes(range(128, 256)) * 4) is None


def test_jsonl_reader_text_html_and_bad_lines(tmp_path):
    rows = [json.dumps({"id": "a", "url": "https://x.org/a", "text": "some text", "label": "math"}),
            "{not json",
            json.dumps({"id": "b", "url": "https://x.org/b", "html": "<p>hi</p>"}),
            json.dumps({"id": "c", "url": "https://x.org/c", "text": "   "}),
            json.dumps({"id": "d", "url": "https://x.org/d"}),
            json.dumps([1, 2]),
            ""]
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    r = JsonlPageReader(str(tmp_path), glob_pattern="*.jsonl.gz")
    docs = read(r)
    assert [(d.id, d.metadata["format"]) for d in docs] == [("a", "text"), ("b", "html")]
    assert docs[0].metadata["label"] == "math" and docs[1].text == "<p>hi</p>"
    assert skip_counts(r) == {"skipped_bad_json": 2, "skipped_empty": 1, "skipped_no_content": 1}


def test_page_reader_options_shard_offset_and_page_size(tmp_path):
    """Both page readers take ``max_page_bytes`` and ``shard_offset`` (the
    page_shard of a document: the offset plus its file's place in the list)."""
    for i, text in enumerate(["first page", "second page " + "y" * 300]):
        (tmp_path / f"p{i}.jsonl").write_text(json.dumps({"url": f"https://p.org/{i}", "text": text}) + "\n")
    r = JsonlPageReader(str(tmp_path), glob_pattern="*.jsonl", shard_offset=10, max_page_bytes=200)
    docs = read(r)
    assert [(d.metadata["url"], d.metadata["page_shard"]) for d in docs] == [("https://p.org/0", "00000010")]
    assert skip_counts(r) == {"skipped_too_large": 1}
    write_warc(tmp_path / "w.warc.gz", [("https://w.org/1", GOOD, "text/html", "response")])
    w = WarcPageReader(str(tmp_path), glob_pattern="*.warc.gz", shard_offset=3, max_page_bytes=len(GOOD) + 1)
    assert [d.metadata["page_shard"] for d in read(w)] == ["00000003"]
    assert WarcPageReader(str(tmp_path), glob_pattern="*.warc.gz", max_page_bytes=10).max_page_bytes == 10
