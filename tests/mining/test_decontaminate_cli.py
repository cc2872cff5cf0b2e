"""tools/decontaminate.py and the datatrove step: fields kept, chat data, bad lines, report."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dsm.mining import decontaminate as dc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import decontaminate as tool  # noqa: E402

PROBLEM = "Compute the sum of the first ten positive odd integers and explain every step."


@pytest.fixture()
def bench(tmp_path):
    root = tmp_path / "bench"
    (root / "math").mkdir(parents=True)
    (root / "math" / "test.jsonl").write_text(json.dumps(
        {"unique_id": "test/x/1.json", "problem": PROBLEM, "solution": "$\\boxed{100}$", "answer": "\\frac{1}{2}"})
        + "\n")
    return root


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_cli_cleans_keeps_fields_counts_bad_lines(tmp_path, bench):
    rows = [
        json.dumps({"id": "a", "url": "u1", "text": "keep me\n" + PROBLEM.upper() + "\nand me", "score": 0.9}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "b", "body": "no text field"}),
        json.dumps({"id": "c", "text": 7}),
        json.dumps({"id": "d", "text": "clean document\nwith two lines"}),
        json.dumps({"id": "e", "text": "  " + PROBLEM + "  "}),  # all contaminated -> dropped
        "",
        json.dumps({"id": "f", "messages": [{"role": "user", "content": "Q: " + PROBLEM + "\nThanks"},
                                            {"role": "assistant", "content": "$\\frac{1}{2}$\nDone."}]}),
    ]
    inp = _write(tmp_path / "in.jsonl", rows)
    out, rep = tmp_path / "out" / "clean.jsonl", tmp_path / "rep.json"
    rc = tool.main(["--input", str(inp), "--output", str(out), "--benchmarks", str(bench), "--report", str(rep)])
    assert rc == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert got == [
        {"id": "a", "url": "u1", "text": "keep me\nand me", "score": 0.9},
        {"id": "d", "text": "clean document\nwith two lines"},
        {"id": "f", "messages": [{"role": "user", "content": "Thanks"},
                                 {"role": "assistant", "content": "Done."}]},
    ]
    r = json.loads(rep.read_text())
    assert r["records"] == {"lines": 9, "bad_lines": 4, "records_written": 3, "records_dropped": 1}
    assert [b.split(":", 1)[1] for b in r["bad_lines"]] == [
        "2: invalid JSON", "3: not a JSON object", "4: no 'text' or 'messages' field", "5: field 'text' is not a string"]
    assert r["totals"]["documents"] == 4 and r["totals"]["documents_contaminated"] == 3
    assert r["totals"]["segments_removed"] == 4  # a: 1, e: 1, f: 1 + 1
    item = r["items"][0]
    assert (item["benchmark"], item["item"], item["documents"]) == ("math", "test/x/1.json", 3)
    assert item["exact_hits"] == 1 and set(item["fields"]) == {"problem", "answer"}
    docs = {d["id"]: d for d in r["documents"]}
    assert docs["a"]["segments_removed"] == [1] and docs["a"]["segments"] == 3 and not docs["a"]["dropped"]
    assert docs["e"]["dropped"] and docs["f"]["benchmarks"] == ["math"]
    assert not list(out.parent.glob("*.tmp*"))


def test_cli_gzip_in_and_out(tmp_path, bench):
    """A .gz output is gzip data under its final name (the temp file beside
    it does not end in .gz, so compression follows the output's name)."""
    inp = tmp_path / "in.jsonl.gz"
    with gzip.open(inp, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": 1, "text": "first line\n" + PROBLEM}) + "\n")
        f.write(json.dumps({"id": 2, "text": "nothing to see"}) + "\n")
    out, rep = tmp_path / "clean.jsonl.gz", tmp_path / "r.json"
    assert tool.main(["--input", str(inp), "--output", str(out), "--benchmarks", str(bench),
                      "--report", str(rep)]) == 0
    with gzip.open(out, "rt", encoding="utf-8") as f:
        got = [json.loads(x) for x in f]
    assert got == [{"id": 1, "text": "first line"}, {"id": 2, "text": "nothing to see"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "clean.jsonl.gz", "in.jsonl.gz", "r.json"]


def test_cli_drop_record_and_text_key(tmp_path, bench):
    inp = _write(tmp_path / "in.jsonl", [
        json.dumps({"prompt": "Solve: " + PROBLEM, "id": 1}),
        json.dumps({"prompt": "Solve 2 + 2.", "id": 2}),
    ])
    out, rep = tmp_path / "o.jsonl", tmp_path / "r.json"
    assert tool.main(["--input", str(inp), "--output", str(out), "--benchmarks", str(bench), "--report", str(rep),
                      "--text-key", "prompt", "--action", "drop-record"]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [2]


def test_cli_bad_arguments_one_line(tmp_path, bench):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "decontaminate.py"), "--input", str(tmp_path / "no.jsonl"),
                           "--output", str(tmp_path / "o.jsonl"), "--benchmarks", str(bench),
                           "--report", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"decontaminate: error: --input: file not found: {tmp_path / 'no.jsonl'}"]


def test_datatrove_step(tmp_path, bench):
    from datatrove.data import Document

    step = dc.BenchmarkDecontamination(bench, report_folder=tmp_path / "rep", batch_docs=2)
    docs = [Document(text="intro\n" + PROBLEM + "\noutro", id="1"), Document(text="nothing here", id="2"),
            Document(text=PROBLEM, id="3"), Document(text="$\\frac{1}{2}$", id="4")]
    out = list(step.run(iter(docs), rank=3, world_size=4))
    assert [(d.id, d.text) for d in out] == [("1", "intro\noutro"), ("2", "nothing here")]
    assert out[0].metadata["decontamination"] == {"segments_removed": 1, "benchmarks": ["math"]}
    stats = {k: v.total for k, v in step.stats.stats.items()}
    assert stats["documents"] == 4 and stats["documents_contaminated"] == 3
    assert stats["documents_dropped"] == 2 and stats["segments_removed"] == 3 and stats["contaminated_math"] == 3
    rep = json.loads((tmp_path / "rep" / "decontamination_00003.json").read_text())
    assert rep["totals"]["documents_dropped"] == 2
