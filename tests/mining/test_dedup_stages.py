"""Dedup before recall on datatrove's multi-stage steps (local executor).

The input is tests/mining/planted.py's corpus: six shards with URL, exact
and near duplicates planted across shards, so with 4 tasks every group has
copies read by different tasks.  Checked: each group loses all its copies
but one, the counts in report.json equal the planted ones, the kept pages
do not depend on the task count (1 vs 4 tasks, and the in-memory method),
and a dedup killed mid-stage resumes without redoing finished tasks and
writes the same bytes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_dsm.config import ConfigError
from megatron_dsm.mining.dedup import DedupConfig, contiguous_order
from megatron_dsm.mining.iterate import MiningConfig, MiningRun
from megatron_dsm.mining.pipeline import ExecutorConfig
from planted import write_planted

REPO = Path(__file__).resolve().parents[2]
HEAVY = 600  # extra pages for shard 2: task 1 of 4 runs for seconds, long enough to be killed in


def _dedup(inp: Path, out: Path, tasks: int, method: str = "stages") -> dict:
    run = MiningRun(MiningConfig(input=[str(inp)], output=str(out)),
                    ex_cfg=ExecutorConfig(tasks=tasks, compression="none"), log=lambda m: None,
                    dedup_cfg=DedupConfig(method=method))
    return run.prepare()["dedup"]


def _kept(folder: Path) -> list[str]:
    return [json.loads(x)["id"] for p in sorted(folder.glob("*.jsonl")) for x in open(p)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dedup")
    answer = write_planted(tmp / "in", heavy=HEAVY)
    counts = {t: _dedup(tmp / "in", tmp / f"run{t}", t) for t in (1, 4)}
    return tmp, answer, counts


def test_planted_duplicates_removed_once_each_with_4_tasks(planted):
    tmp, answer, counts = planted
    kept = _kept(tmp / "run4" / "deduped")
    assert len(kept) == len(set(kept))
    for kind, groups in answer["groups"].items():
        for ids in groups:
            survivors = [i for i in ids if i in set(kept)]
            assert len(survivors) == 1, (kind, ids, survivors)
            if kind != "near":  # URL and exact checks keep the first copy in input order
                assert survivors == ids[:1]
    assert set(answer["unique"]) <= set(kept)
    c = counts[4]
    assert c["method"] == "stages" and c["tasks"] == 4
    assert c["removed"] == answer["removed"] == {"url": 6, "exact": 6, "near": 6}
    assert (c["pages_in"], c["pages_out"]) == (answer["pages"], answer["pages"] - 18)
    report = json.loads((tmp / "run4" / "report.json").read_text())
    assert report["dedup"] == c


def test_kept_pages_do_not_depend_on_task_count_or_method(planted, tmp_path):
    tmp, answer, counts = planted
    assert _kept(tmp / "run1" / "deduped") == _kept(tmp / "run4" / "deduped")  # same pages, same order
    assert counts[1]["removed"] == counts[4]["removed"]
    memory = _dedup(tmp / "in", tmp_path / "mem", 1, method="memory")
    assert memory["removed"] == counts[4]["removed"]
    assert _kept(tmp_path / "mem" / "deduped") == _kept(tmp / "run4" / "deduped")


def test_killed_stage_resumes_without_redoing_finished_tasks(planted, tmp_path):
    tmp, _, _ = planted
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "mine_corpus.py"), "dedup", "--input", str(tmp / "in"),
           "--output", str(out), "--tasks", "4", "--compression", "none"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = out / "logs" / "dedup_near_signatures" / "completions"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        t0 = time.time()
        while not (done / "00000").exists() and proc.poll() is None and time.time() - t0 < 300:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # task 0 finished; task 1 reads the heavy shard
    finally:
        proc.wait()
    finished = sorted(p.name for p in done.iterdir())
    assert finished == ["00000"], f"the kill came too late or too early: {finished}"
    sigs = out / "dedup" / "near_sigs.partial"
    rank0 = sorted(sigs.glob("bucket_*/00000.minhash.sig"))
    assert len(rank0) == 14 and not (out / "deduped").exists()
    logs = [done / "00000", done.parent / "stats" / "00000.json"]
    stamps = [p.stat().st_mtime_ns for p in rank0 + logs]

    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    # the stage's folder is renamed from .partial when complete; the files of task 0 were not written again
    rank0 = [out / "dedup" / "near_sigs" / p.relative_to(sigs) for p in rank0]
    assert [p.stat().st_mtime_ns for p in rank0 + logs] == stamps, "a finished task was run again"
    again = out / "dedup" / "near_sigs" / "bucket_000" / "00001.minhash.sig"
    assert again.stat().st_mtime_ns > (done / "00000").stat().st_mtime_ns
    ref = tmp / "run4" / "deduped"
    assert sorted(p.name for p in (out / "deduped").iterdir()) == sorted(p.name for p in ref.iterdir())
    for p in ref.iterdir():
        assert (out / "deduped" / p.name).read_bytes() == p.read_bytes()
    assert json.loads((out / "report.json").read_text())["dedup"] == json.loads(
        (tmp / "run4" / "report.json").read_text())["dedup"]


def test_rerun_with_another_task_count_is_refused(planted):
    tmp = planted[0]
    # a finished dedup is reused whatever the task count; a partial one cannot be resharded
    assert _dedup(tmp / "in", tmp / "run4", 2)["tasks"] == 4
    (tmp / "run4" / "deduped").rename(tmp / "run4" / "deduped.keep")
    try:
        with pytest.raises(ConfigError, match=r"was started with other tasks \(tasks 4\)"):
            _dedup(tmp / "in", tmp / "run4", 2)
    finally:
        (tmp / "run4" / "deduped.keep").rename(tmp / "run4" / "deduped")


def test_contiguous_order_by_hand():
    files = list("abcdefg")
    # 3 tasks: blocks abc / de / fg; datatrove gives task r entries r, r+3, r+6
    order = contiguous_order(files, 3)
    assert order == ["a", "d", "f", "b", "e", "g", "c"]
    assert [order[r::3] for r in range(3)] == [["a", "b", "c"], ["d", "e"], ["f", "g"]]
    assert contiguous_order(files, 1) == files
    assert [contiguous_order(list("ab"), 4)[r::4] for r in range(4)] == [["a"], ["b"], [], []]
