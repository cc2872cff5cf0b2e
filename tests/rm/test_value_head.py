"""The value head gives the same scores at TP=1 and TP=2 (relative 1e-5),
for the fresh layout-independent init and for a TP=1 checkpoint loaded at
TP=2; a language-model checkpoint initialises the backbone."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("value_tp_worker.py"))
sys.path.insert(0, str(REPO / "tests" / "training"))
from launch import free_port  # noqa: E402


def _run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("MASTER_ADDR", None), env.pop("MASTER_PORT", None)
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
                       start_new_session=True)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.multiproc
def test_value_head_tp1_equals_tp2(tmp_path):
    _run([sys.executable, WORKER, "--mode", "save", "--tp", "1", "--dir", str(tmp_path)])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
          "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
          WORKER, "--mode", "load", "--tp", "2", "--dir", str(tmp_path)])
    one = torch.load(tmp_path / "save_tp1_rank0.pt")
    r0, r1 = (torch.load(tmp_path / f"load_tp2_rank{r}.pt") for r in (0, 1))
    assert one["fresh"].shape == (3, 24) and one["lm_backbone_keys"] > 10
    # both TP ranks hold the same (replicated) scores
    assert torch.equal(r0["fresh"], r1["fresh"]) and torch.equal(r0["loaded"], r1["loaded"])
    fresh_rel, loaded_rel = _rel(r0["fresh"], one["fresh"]), _rel(r0["loaded"], one["trained"])
    print(f"\nTP=2 vs TP=1 relative max diff: fresh init {fresh_rel:.2e}, loaded checkpoint {loaded_rel:.2e}")
    assert fresh_rel < 1e-5 and loaded_rel < 1e-5
    # the checkpoint really changed the scores (the comparison is not of two inits)
    assert _rel(one["trained"], one["fresh"]) > 1e-2
