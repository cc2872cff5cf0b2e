"""`TP=2 NPROC=2 bash examples/pretrain_dsm.sh` with nothing else set: builds
the demo corpus (no ../shared), prints Megatron-format lines, and the lm loss
falls by at least 30% from the first logged value to the last."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "training"))

from launch import free_port  # noqa: E402

from megatron_dsm.training.logging import parse_line  # noqa: E402


@pytest.mark.multiproc
def test_pretrain_script_tp2_learns(tmp_path):
    env = dict(os.environ, TP="2", NPROC="2", TRAIN_ITERS="60", SAVE_DIR=str(tmp_path / "ckpt"),
               DEMO_DIR=str(tmp_path / "corpus"), MASTER_PORT=str(free_port()),
               PY=sys.executable)
    p = subprocess.run(["bash", "examples/pretrain_dsm.sh"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900, start_new_session=True)
    assert p.returncode == 0, p.stderr[-4000:]
    lines = [parse_line(ln) for ln in p.stdout.splitlines()]
    lines = [r for r in lines if r and "lm loss" in r]
    assert len(lines) == 12  # --log-interval 5 over 60 iterations
    for r in lines:
        for key in ("consumed samples", "elapsed time per iteration (ms)", "learning rate",
                    "lm loss", "grad norm", "tokens per second"):
            assert key in r, (key, r)
    first, last = lines[0]["lm loss"], lines[-1]["lm loss"]
    assert last <= 0.7 * first, (first, last)
    assert "TP=2" in p.stdout
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "60"
