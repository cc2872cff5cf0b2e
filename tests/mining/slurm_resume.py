"""A Slurm array task fails; the stage stops with one error; the same call again redoes only that task.

Run by tests/slurm/run_slurm_test.sh under its local Slurm (SLURM_CONF set,
this folder and the repository on PYTHONPATH, datatrove's launcher on PATH):

    python tests/mining/slurm_resume.py WORK_DIR PARTITION

A three-task stage whose task 1 raises while ``WORK_DIR/fail`` exists (a
task that fails for a reason outside the pipeline, such as a full disk or a
node lost, and succeeds when run again): the first ``run_stage`` must stop
with ``StageError`` naming one task, leave task 0 and 2's outputs, and the
second must run task 1 only and publish the whole stage.  Prints one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from megatron_dsm.mining.pipeline import ExecutorConfig, StageError, run_stage


class WriteRank(PipelineStep):
    """Writes ``<folder>/<rank>.txt``; task 1 raises while ``fail_flag`` exists."""

    name = "write rank"

    def __init__(self, folder: str, fail_flag: str):
        super().__init__()
        self.folder, self.fail_flag = folder, fail_flag

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if rank == 1 and Path(self.fail_flag).exists():
            raise RuntimeError("task 1 fails while the flag file exists")
        Path(self.folder, f"{rank}.txt").write_text(f"{rank}\n")
        return iter(())


def main(work: str, partition: str) -> int:
    work_dir = Path(work)
    flag = work_dir / "fail"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    cfg = ExecutorConfig(executor="slurm", slurm_partition=partition, tasks=3, slurm_poll_s=2, slurm_time="10:00",
                         slurm_mem_per_cpu_gb=1)
    out, logs = work_dir / "stage", work_dir / "logs"

    def build(partial):
        return [WriteRank(str(partial), str(flag))]

    try:
        run_stage("resume_test", out, build, logs, cfg)
        print("FAIL: the stage completed although task 1 failed")
        return 1
    except StageError as e:
        message = str(e)
    if "1 task(s) did not complete ([1])" not in message or out.exists():
        print(f"FAIL: unexpected stop: {message}")
        return 1
    done = logs / "resume_test" / "completions"
    stamps = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    if sorted(stamps) != ["00000", "00002"]:
        print(f"FAIL: completed tasks after the failure: {sorted(stamps)}")
        return 1
    flag.unlink()
    run_stage("resume_test", out, build, logs, cfg)
    again = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    files = sorted(p.name for p in out.iterdir())
    if files != ["0.txt", "1.txt", "2.txt"] or any(again[k] != v for k, v in stamps.items()):
        print(f"FAIL: after the rerun the stage holds {files}; tasks 0 and 2 rerun: "
              f"{[k for k, v in stamps.items() if again.get(k) != v]}")
        return 1
    print(f"resume: task 1 of 3 failed, the stage stopped ({message.split(';')[0]}); the rerun ran task 1 only")
    return 0


if __name__ == "__main__":
    import slurm_resume  # WriteRank must pickle by module name: the stage jobs import it from PYTHONPATH

    sys.exit(slurm_resume.main(*sys.argv[1:3]))
