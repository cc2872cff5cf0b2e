"""Each kind of bad input is counted, listed in {prefix}.rejects.jsonl with
file, line and reason, and the run still finishes; the exit status is
non-zero only when no document at all is valid.  A killed run leaves no
.idx beside a partial .bin."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dsm.data.tokenizer import build_tokenizer
from tests.data.helpers import OLMO, REPO, load_tool

TOOL = load_tool("preprocess_data")


class Result:
    def __init__(self, returncode, out):
        self.returncode, self.stdout, self.stderr = returncode, out.out, out.err


def run_tool(capsys, *args):
    """tools/preprocess_data.py's main() in this process (no interpreter start-up)."""
    code = TOOL.main([str(a) for a in args])
    return Result(code, capsys.readouterr())

GOOD = [json.dumps({"text": f"Good document number {i}: 2 + {i} = {2 + i}."}).encode() for i in range(4)]


def _run(capsys, shared_data, tmp_path, bad_line: bytes, extra=()):
    """good, BAD, good, good, good -> (exit status, rejects, dataset, stdout)."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([GOOD[0], bad_line, *GOOD[1:]]) + b"\n")
    r = run_tool(capsys, "--input", src, "--output-prefix", tmp_path / "out",
                 "--tokenizer-model", shared_data / OLMO, "--append-eod", "--progress", "false", *extra)
    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    ds = IndexedDataset(str(tmp_path / "out_text_document")) if r.returncode == 0 else None
    return r, rejects, ds, str(src)


def _check(shared_data, r, rejects, ds, src, reason_part):
    assert r.returncode == 0, r.stderr[-1500:]
    assert len(rejects) == 1
    assert rejects[0]["file"] == src and rejects[0]["line"] == 2 and reason_part in rejects[0]["reason"]
    assert "rejected: 1" in r.stdout and "rejects listed in" in r.stdout
    # the four good documents are all there, in order
    tok = build_tokenizer("hf", shared_data / OLMO)
    assert len(ds) == 4
    assert [tok.decode(ds[i][:-1]) for i in range(4)] == [json.loads(g)["text"] for g in GOOD]


def test_malformed_json_line(capsys, shared_data, tmp_path):
    _check(shared_data, *_run(capsys, shared_data, tmp_path, b'{"text": "unterminated'), "malformed JSON")


def test_missing_key(capsys, shared_data, tmp_path):
    _check(shared_data, *_run(capsys, shared_data, tmp_path, b'{"body": "text under another key"}'), "missing key 'text'")


def test_non_utf8_bytes(capsys, shared_data, tmp_path):
    r, rejects, ds, src = _run(capsys, shared_data, tmp_path, b'{"text": "caf\xe9 latin-1"}')
    _check(shared_data, r, rejects, ds, src, "non-UTF-8 bytes at byte 13")


def test_empty_text(capsys, shared_data, tmp_path):
    _check(shared_data, *_run(capsys, shared_data, tmp_path, b'{"text": ""}'), "empty text in key 'text'")


def test_fifty_megabyte_document(capsys, shared_data, tmp_path):
    big = b'{"text": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    r, rejects, ds, src = _run(capsys, shared_data, tmp_path, big)
    _check(shared_data, r, rejects, ds, src, f"document of {len(big) + 1} bytes exceeds --max-document-bytes")


def test_non_string_text_and_blank_line(capsys, shared_data, tmp_path):
    _check(shared_data, *_run(capsys, shared_data, tmp_path, b'{"text": 42}'), "holds a int, not text")
    _check(shared_data, *_run(capsys, shared_data, tmp_path, b"   "), "blank line")


def test_no_valid_document_exits_non_zero(capsys, shared_data, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'{"text": ""}\nnot json\n{"other": 1}\n')
    r = run_tool(capsys, "--input", src, "--output-prefix", tmp_path / "out",
                 "--tokenizer-model", shared_data / OLMO, "--progress", "false")
    assert r.returncode == 1
    assert "no valid document" in r.stdout and "rejected: 3" in r.stdout
    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert [x["line"] for x in rejects] == [1, 2, 3]
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "out.rejects.jsonl"]  # no empty dataset written


def test_killed_run_leaves_no_index_beside_partial_bin(shared_data, tmp_path):
    src = tmp_path / "big.jsonl"
    data = (shared_data / "web/docs.jsonl").read_bytes()
    src.write_bytes(data * 4)
    proc = subprocess.Popen([sys.executable, str(REPO / "tools/preprocess_data.py"), "--input", str(src),
                             "--output-prefix", str(tmp_path / "out"), "--tokenizer-model",
                             str(shared_data / OLMO), "--workers", "1", "--progress", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    # wait until the temporary .bin has grown (tokenizing is under way), then kill
    deadline = time.time() + 120
    while time.time() < deadline:
        tmps = list(tmp_path.glob("out_text_document.bin.tmp*"))
        if tmps and tmps[0].stat().st_size > 1_000_000:
            break
        if proc.poll() is not None:
            pytest.fail("run ended before it could be interrupted")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("out_text_document.bin.tmp*"))
    assert not (tmp_path / "out_text_document.idx").exists()
    assert not (tmp_path / "out_text_document.bin").exists()
