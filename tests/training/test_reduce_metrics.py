"""Trainer.reduce_metrics: the key set is agreed once and cached, and the
cached path gives the same means as agreeing every step — also when the keys
change, on DP=2, TP=2 and PP=2 (torchrun, gloo) and in one process (no
collective at all).

Run directly under torchrun this file is its own worker:
``torchrun --nproc-per-node 2 test_reduce_metrics.py TP PP OUT``.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _bare_trainer():
    """A Trainer with only what reduce_metrics reads (no model, no optimizer)."""
    from megatron.core import parallel_state as ps

    from megatron_dsm.training.loop import Trainer

    t = Trainer.__new__(Trainer)
    t.ps, t.rank = ps, torch.distributed.get_rank()
    t._metrics_src, t._metric_keys = None, None
    return t


def _count_broadcasts(monkeypatch_like) -> list:
    """Wrap broadcast_object_list to count its calls."""
    calls = []
    real = torch.distributed.broadcast_object_list

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch_like(torch.distributed, "broadcast_object_list", counted)
    return calls


def _script(holder: bool, dp_rank: int, dp_size: int):
    """(losses per call, expected metrics per call): per-micro-batch values
    that differ per DP rank; the key set changes at call 3 and back at 5."""
    def mb(key_set, step):
        return [{k: torch.tensor(float(10 * step + i + 100 * dp_rank + j))
                 for j, k in enumerate(key_set)} for i in range(2)]

    sets = [("lm loss", "kl"), ("lm loss", "kl"), ("lm loss", "kl", "entropy"),
            ("entropy", "kl", "lm loss"), ("lm loss", "kl")]
    losses, expected = [], []
    for step, ks in enumerate(sets):
        losses.append(mb(ks, step) if holder else [])
        exp = {}
        for j, k in enumerate(ks):
            # mean over micro-batches i=0,1 then over DP ranks
            exp[k] = sum(10 * step + 0.5 + 100 * r + j for r in range(dp_size)) / dp_size
        expected.append(exp)
    return losses, expected


def _check(trainer, holder, dp_rank, dp_size):
    losses, expected = _script(holder, dp_rank, dp_size)
    for got_losses, exp in zip(losses, expected):
        got = trainer.reduce_metrics(got_losses)
        assert set(got) == set(exp), (got, exp)
        for k in exp:
            assert got[k] == pytest.approx(exp[k], abs=1e-9), (k, got, exp)


def test_one_process_needs_no_collective(monkeypatch, dist_cleanup):
    from megatron_dsm import platform

    platform.initialize_distributed(1, 1, seed=1)
    calls = _count_broadcasts(monkeypatch.setattr)
    monkeypatch.setattr(torch.distributed, "all_reduce",
                        lambda *a, **k: pytest.fail("one process should not all-reduce"))
    _check(_bare_trainer(), True, 0, 1)
    assert not calls
    # exactly the plain mean of the micro-batches
    t = _bare_trainer()
    got = t.reduce_metrics([{"a": torch.tensor(0.1), "b": torch.tensor(2.0)},
                            {"a": torch.tensor(0.7), "b": torch.tensor(3.0)}])
    assert got == {"a": (float(torch.tensor(0.1)) + float(torch.tensor(0.7))) / 2, "b": 2.5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiproc
@pytest.mark.parametrize("tp, pp", [(1, 1), (1, 2)])   # DP=2; PP=2 (losses on rank 1 only)
def test_cached_keys_across_ranks(tmp_path, tp, pp):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                        __file__, str(tp), str(pp), str(tmp_path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
                       start_new_session=True)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    for r in (0, 1):
        # broadcasts: the first call, the two key-set changes; nothing else
        assert (tmp_path / f"rank{r}.txt").read_text() == "ok broadcasts=3"


def _worker(tp: int, pp: int, out: Path) -> None:
    from megatron.core import parallel_state as ps

    from megatron_dsm import platform

    platform.initialize_distributed(tp, pp, seed=1)
    calls = _count_broadcasts(lambda obj, name, fn: setattr(obj, name, fn))
    t = _bare_trainer()
    holder = ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
    _check(t, holder, ps.get_data_parallel_rank(), ps.get_data_parallel_world_size())
    (out / f"rank{torch.distributed.get_rank()}.txt").write_text(f"ok broadcasts={len(calls)}")
    platform.destroy_distributed()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
