"""Helpers to run the training entry point in subprocesses (plain python or
torchrun with gloo) and read back its per-iteration metrics."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(args: list[str], nproc: int, env: dict | None) -> tuple[list[str], dict]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    e.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env or {}))
    if nproc == 1:
        cmd = [PY, str(REPO / "tools" / "pretrain.py")] + args
    else:
        cmd = [PY, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               str(REPO / "tools" / "pretrain.py")] + args
    return cmd, e


def run_pretrain(args: list[str], *, nproc: int = 1, env: dict | None = None,
                 timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    cmd, e = _command(args, nproc, env)
    # Own session: the fault-injection test kills the whole group, and a
    # helper process (dist_checkpointing's queue manager) must die with it.
    p = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout,
                       start_new_session=True)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nSTDOUT:\n{p.stdout[-4000:]}\nSTDERR:\n{p.stderr[-6000:]}")
    return p


def start_pretrain(args: list[str], *, nproc: int = 1, env: dict | None = None) -> subprocess.Popen:
    """The same run, started in the background (stdout and stderr piped)."""
    cmd, e = _command(args, nproc, env)
    return subprocess.Popen(cmd, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def read_metrics(path) -> dict[int, dict]:
    out = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        out[r["iteration"]] = r
    return out


def common_args(data_prefix: str, **over) -> list[str]:
    base = {"--data-path": data_prefix, "--vocab-size": "256", "--seq-length": "64",
            "--micro-batch-size": "2", "--global-batch-size": "8", "--lr": "3e-3",
            "--log-interval": "1", "--seed": "7", "--num-layers": "4"}
    base.update(over)
    out = []
    for k, v in base.items():
        if v is None:
            continue
        out += [k] + (v.split() if isinstance(v, str) and " " in v and k != "--data-path" else [str(v)])
    return out
