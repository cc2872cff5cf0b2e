"""SIGTERM / SIGUSR1 to a running training job: the step in flight finishes,
a checkpoint of that iteration is published, the process exits 0, and a
resumed run continues from the next iteration.  With two data-parallel
ranks only one of them is signalled (as when one node gets the scheduler's
warning): both stop after the same step."""
import os
import re
import signal
from pathlib import Path

import pytest

from launch import common_args, read_metrics, run_pretrain, start_pretrain

from megatron_dsm.training.logging import parse_line

ITERS = 2000   # far more than the run gets to: the signal ends it


def _wait_for_iteration(p, at_least: int) -> list[str]:
    """stdout lines up to the first log line of iteration >= at_least."""
    seen = []
    for line in p.stdout:
        seen.append(line)
        rec = parse_line(line)
        if rec and rec["iteration"] >= at_least:
            return seen
    raise AssertionError(f"run ended before iteration {at_least}:\n{''.join(seen)[-3000:]}\n"
                         f"{p.stderr.read()[-3000:]}")


def _finish(p, seen: list[str]) -> str:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, (p.returncode, out[-3000:], err[-4000:])
    return "".join(seen) + out


def _worker(torchrun_pid: int, rank: int) -> int:
    """The pid of torchrun's worker of ``rank`` (from /proc): the descendant
    whose environment says RANK=rank and whose parent's does not (helper
    processes a worker starts inherit its environment)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found = [pid for pid in parent if _descends(pid, torchrun_pid, parent)
             and _rank(pid) == rank and _rank(parent[pid]) != rank]
    assert len(found) == 1, found
    return found[0]


def _descends(pid: int, ancestor: int, parent: dict[int, int]) -> bool:
    while pid in parent and pid != ancestor:
        pid = parent[pid]
    return pid == ancestor


def _rank(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for kv in env:
        if kv.startswith(b"RANK="):
            return int(kv[5:])
    return None


def _check_exit(out: str, ckpt: Path, metrics: Path, name: str) -> int:
    m = re.search(rf"exiting at iteration (\d+) \({name}\)", out)
    assert m, out[-3000:]
    it = int(m[1])
    assert 3 <= it < ITERS
    # the step in flight finished and its state is the published checkpoint
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == str(it)
    assert (ckpt / f"iter_{it:07d}" / "metadata.json").is_file()
    assert max(read_metrics(metrics)) == it
    return it


def test_sigterm_saves_and_exits_cleanly(corpus, tmp_path):
    ckpt, m1 = tmp_path / "ckpt", tmp_path / "m1.jsonl"
    args = common_args(corpus, **{"--train-iters": str(ITERS), "--save": str(ckpt)})
    p = start_pretrain(args + ["--log-json", str(m1)])
    seen = _wait_for_iteration(p, 3)
    p.send_signal(signal.SIGTERM)
    it = _check_exit(_finish(p, seen), ckpt, m1, "SIGTERM")
    # the checkpoint resumes: the next run starts at the following iteration
    m2 = tmp_path / "m2.jsonl"
    run_pretrain(args + ["--load", str(ckpt), "--exit-interval", str(it + 2), "--log-json", str(m2)])
    assert sorted(read_metrics(m2)) == [it + 1, it + 2]


@pytest.mark.multiproc
def test_signal_to_one_rank_stops_both(corpus, tmp_path):
    ckpt, m1 = tmp_path / "ckpt", tmp_path / "m1.jsonl"
    p = start_pretrain(common_args(corpus, **{"--train-iters": str(ITERS), "--save": str(ckpt),
                                              "--log-json": str(m1)}), nproc=2)
    seen = _wait_for_iteration(p, 3)
    os.kill(_worker(p.pid, 1), signal.SIGUSR1)          # rank 1 only; rank 0 logs
    out = _finish(p, seen)
    _check_exit(out, ckpt, m1, "SIGUSR1")
