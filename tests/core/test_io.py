"""megatron_dsm.io: atomic writes leave the old file or the new one, never a
half-written one; readers stop at the first bad line with file:line."""
import gzip
import json

import pytest

from megatron_dsm import io


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    io.atomic_write(p, "one\n")
    io.atomic_write(p, b"two\n")
    assert p.read_text() == "two\n"
    assert [x.name for x in p.parent.iterdir()] == ["a.txt"]


def test_failed_write_keeps_previous_file_and_no_temp(tmp_path):
    p = tmp_path / "a.json"
    io.write_json(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text('{"v": 2')        # half written
            raise RuntimeError("killed")
    assert json.loads(p.read_text()) == {"v": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_jsonl_round_trip_and_gzip(tmp_path):
    recs = [{"q": "1+1", "a": 2}, {"q": "é", "a": None}]
    assert io.write_jsonl(tmp_path / "r.jsonl", recs) == 2
    assert [r for _, r in io.read_jsonl(tmp_path / "r.jsonl")] == recs
    with gzip.open(tmp_path / "r.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(recs[0]) + "\n\n" + json.dumps(recs[1]) + "\n")
    assert [(n, r) for n, r in io.read_jsonl(tmp_path / "r.jsonl.gz")] == [(1, recs[0]), (3, recs[1])]


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(KeyError, match=r"bad.jsonl:2: invalid JSON"):
        list(io.read_jsonl(p, error=KeyError))
    p.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object, got list"):
        list(io.read_jsonl(p))
    with pytest.raises(ValueError, match="cannot read"):
        list(io.read_jsonl(tmp_path / "missing.jsonl"))


def test_read_json_error_line(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{\n "a": 1,\n}\n')
    with pytest.raises(ValueError, match=r"x.json:3: invalid JSON"):
        io.read_json(p)


def test_replace_dir(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("x")
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "new").write_text("y")
    io.replace_dir(tmp_path / "out.partial", tmp_path / "out")
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["new"]
    assert not (tmp_path / "out.partial").exists()
