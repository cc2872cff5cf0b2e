"""Losses are normalised by the count of the whole global batch (tokens for
SFT and GRPO token-mean, non-empty sequences for the paper's sequence mean,
scored positions for the reward model), so one step gives the same update
with the batch as one micro-batch, as four micro-batches of unequal counts,
and over two data-parallel ranks; the logged metrics are the batch's means.
A loss averaged per micro-batch (megatron-core's plain averaging) fails the
same check: the control that the comparison can tell them apart."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "rl" / "loss_norm_worker.py"
KINDS = ("sft", "grpo_seq", "grpo_token", "rm")


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return dict(env, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


@pytest.fixture(scope="module")
def updates(tmp_path_factory):
    out = tmp_path_factory.mktemp("lossnorm")
    p = subprocess.run([sys.executable, str(WORKER), str(out)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-addr", "127.0.0.1", "--master-port", str(port), str(WORKER), str(out)],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return {(k, lay): torch.load(out / f"{k}_{lay}.pt")
            for k in KINDS for lay in ("one", "four", "legacy", "dp2")}


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.multiproc
@pytest.mark.parametrize("kind", KINDS)
def test_same_update_for_one_four_and_dp2(updates, kind):
    one = updates[kind, "one"]
    assert one["update"].abs().max() > 0
    for layout in ("four", "dp2"):
        got = updates[kind, layout]
        print(f"{kind} {layout}: update rel diff {_rel(got['update'], one['update']):.2e}, "
              f"grad rel diff {_rel(got['grad'], one['grad']):.2e}")
        assert _rel(got["update"], one["update"]) < 1e-5, (kind, layout)
        assert _rel(got["grad"], one["grad"]) < 1e-5, (kind, layout)
        # logged metrics are the same batch means
        assert got["metrics"].keys() == one["metrics"].keys()
        for k, v in one["metrics"].items():
            assert got["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), (kind, layout, k)
    legacy = _rel(updates[kind, "legacy"]["update"], one["update"])
    print(f"{kind} per-micro-batch mean: update rel diff {legacy:.2e}")
    assert legacy > 0.1

