"""The steps a stage is made of, and how each is launched.

A stage is a short list of steps run in order: in-process glue (``Py``:
writing inputs, joining shards, labelling samples), a project tool in one
process (``Tool``), or a training tool (``Train``) on the stage's nodes and
ranks.  Where a step runs is the launcher's business:

* ``LocalLauncher`` (``--executor local``): tools as child processes of the
  runner, training tools under ``torch.distributed.run`` when they have more
  than one rank;
* ``SlurmLauncher`` (inside a stage's sbatch job, ``--executor slurm``):
  training tools through the repository's batch scripts
  (``examples/slurm/{pretrain,sft,grpo}_dsm.sbatch``, run by bash inside the
  allocation so their ``srun`` uses the job's nodes), mining through
  ``examples/slurm/mine_corpus.sbatch`` (its stages become datatrove job
  arrays), reward models through ``srun`` + ``torch.distributed.run`` per node.

A step that finished leaves ``.steps/<n>.done`` in the stage folder, so a
stage interrupted part way resumes at its first unfinished step (training
tools themselves resume from their last checkpoint).
"""

from __future__ import annotations

import abc
import dataclasses
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from megatron_dsm.io import atomic_write

REPO = Path(__file__).resolve().parents[2]


class StepError(RuntimeError):
    """A step failed; the message names it and its log."""


@dataclasses.dataclass
class Py:
    """In-process glue: ``fn()``."""

    name: str
    fn: Callable[[], object]

    def describe(self) -> str:
        return f"(in process) {self.name}"


@dataclasses.dataclass
class Tool:
    """A project tool in one process: ``python TOOL ARGS``.  ``sbatch``: on
    Slurm, run this batch script (with ``sbatch_args``) instead."""

    name: str
    tool: str
    args: list[str]
    sbatch: str | None = None
    sbatch_args: list[str] | None = None

    def describe(self) -> str:
        return shlex.join(["python", self.tool, *self.args])


@dataclasses.dataclass
class Train:
    """A training tool on ``nodes`` x ``nproc`` ranks.  On Slurm it goes
    through ``sbatch`` (a batch script of examples/slurm) with ``env``, the
    script's environment contract (DATA_PATH, SAVE_DIR, LOAD, ...), or,
    without one, ``srun`` + torchrun per node."""

    name: str
    tool: str
    args: list[str]
    nodes: int = 1
    nproc: int = 1
    sbatch: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        ranks = self.nodes * self.nproc
        head = ["torchrun", f"--nnodes={self.nodes}", f"--nproc-per-node={self.nproc}"] if ranks > 1 else ["python"]
        return shlex.join([*head, self.tool, *self.args])


Step = Py | Tool | Train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launcher(abc.ABC):
    """Runs commands with their output appended to the stage's log."""

    def __init__(self, python: str, threads: int = 1):
        self.python = python
        self.threads = threads

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        env["OMP_NUM_THREADS"] = str(self.threads)
        # the tools import this checkout's package, wherever they are started from
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(extra or {})
        return env

    def call(self, cmd: list[str], log: Path, name: str, env: dict[str, str] | None = None) -> None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n$ {shlex.join(cmd)}\n")
            f.flush()
            rc = subprocess.call(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=self.env(env))
        if rc != 0:
            raise StepError(f"step {name} failed (exit {rc}); log: {log}{_tail(log)}")

    def run(self, step: Step, log: Path) -> None:
        if isinstance(step, Py):
            step.fn()
        elif isinstance(step, Tool):
            self.tool(step, log)
        else:
            self.train(step, log)

    def tool(self, step: Tool, log: Path) -> None:
        self.call([self.python, step.tool, *step.args], log, step.name)

    @abc.abstractmethod
    def train(self, step: Train, log: Path) -> None:
        """Run a training step: local processes (torchrun) or an sbatch job."""


class LocalLauncher(Launcher):
    """Child processes of the runner; torchrun for more than one rank."""

    def train(self, step: Train, log: Path) -> None:
        if step.nodes > 1:
            raise StepError(f"step {step.name}: {step.nodes} nodes need --executor slurm")
        head = [self.python]
        if step.nproc > 1:
            head += ["-m", "torch.distributed.run", "--nproc-per-node", str(step.nproc),
                     "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
        self.call([*head, step.tool, *step.args], log, step.name)


class SlurmLauncher(Launcher):
    """Inside a stage's sbatch job: the repository's batch scripts as the
    job's own commands (bash), so their srun spreads ranks over the job's nodes."""

    def tool(self, step: Tool, log: Path) -> None:
        if step.sbatch is None:
            return super().tool(step, log)
        env = {"PYTHON": self.python, "DSM_REPO": str(REPO)}
        self.call(["bash", step.sbatch, *(step.sbatch_args or step.args)], log, step.name, env)

    def train(self, step: Train, log: Path) -> None:
        if step.sbatch is not None:
            env = {"PYTHON": self.python, "PY": self.python, "DSM_REPO": str(REPO),
                   "NPROC": str(step.nproc), **step.env}
            self.call(["bash", step.sbatch, *step.args], log, step.name, env)
            return
        torchrun = [self.python, "-m", "torch.distributed.run", "--nnodes", "$SLURM_NNODES",
                    "--node-rank", "$SLURM_NODEID", "--nproc-per-node", str(step.nproc),
                    "--master-addr", "$MASTER_ADDR", "--master-port", "$MASTER_PORT", step.tool]
        inner = " ".join(a if a.startswith("$") else shlex.quote(a) for a in torchrun)
        script = (f'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) '
                  f'MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000)); '
                  f'srun --kill-on-bad-exit=1 --ntasks="$SLURM_NNODES" --ntasks-per-node=1 '
                  f'bash -c {shlex.quote(inner + " " + shlex.join(step.args))}')
        self.call(["bash", "-c", script], log, step.name)


def _tail(log: Path, lines: int = 12) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n" + "\n".join("  | " + t for t in text)


def run_steps(steps: list[Step], folder: Path, launcher: Launcher, log: Path,
              say: Callable[[str], None] = print) -> None:
    """Run the steps not yet marked done; mark each when it finishes."""
    marks = folder / ".steps"
    marks.mkdir(parents=True, exist_ok=True)
    for i, step in enumerate(steps):
        mark = marks / f"{i:02d}-{step.name}.done"
        if mark.is_file():
            say(f"    {step.name}: done earlier")
            continue
        t0 = time.perf_counter()
        launcher.run(step, log)
        atomic_write(mark, f"{time.perf_counter() - t0:.1f}\n")
        say(f"    {step.name}: {time.perf_counter() - t0:.1f}s")


def python_executable() -> str:
    return sys.executable
