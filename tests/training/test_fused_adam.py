"""--cpu-fused-adam: megatron-core's torch AdamW fallback switched to torch's
fused CPU kernel (training/optimizer.py::use_fused_cpu_adam) gives the update of
the per-parameter loop it replaces, and only CPU Adam groups are switched."""
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from megatron_dsm.training.optimizer import use_fused_cpu_adam  # noqa: E402


class _Wrapper:
    """The shape of megatron-core's optimizer wrappers: ``.optimizer`` holds
    the torch optimizer (a ChainedOptimizer lists them in
    ``chained_optimizers``)."""

    def __init__(self, opt):
        self.optimizer = opt


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in [(64, 32), (32,), (16, 64)]]


def test_fused_update_equals_loop_update():
    loop_p, fused_p = _params(0), _params(0)
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    loop = torch.optim.AdamW(loop_p, foreach=False, **kw)
    fused = torch.optim.AdamW(fused_p, **kw)
    chained = type("Chained", (), {"chained_optimizers": [_Wrapper(fused), _Wrapper(None)]})()
    assert use_fused_cpu_adam(chained) == 1
    assert fused.param_groups[0]["fused"] is True
    assert use_fused_cpu_adam(chained) == 0          # already switched: nothing to do
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(loop_p, fused_p):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        loop.step()
        fused.step()
    for a, b, start in zip(loop_p, fused_p, _params(0)):
        assert (a - b).abs().max().item() < 1e-6
        assert (b - start).abs().max().item() > 1e-3      # the parameters really moved


def test_only_cpu_adam_groups_are_switched():
    sgd = torch.optim.SGD(_params(2), lr=0.1)
    assert use_fused_cpu_adam(_Wrapper(sgd)) == 0
    assert not sgd.param_groups[0].get("fused")
    half = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4, dtype=torch.float16))])
    assert use_fused_cpu_adam(_Wrapper(half)) == 0       # fp16 on CPU: keep the loop


def test_trainer_flag_switches_megatron_optimizer(dist_cleanup):
    """--cpu-fused-adam reaches the torch AdamW inside megatron-core's
    optimizer; without it the default loop stays."""
    from megatron_dsm.training.arguments import parse_args
    from megatron_dsm.training.loop import Trainer

    argv = ["--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2",
            "--ffn-hidden-size", "64", "--seq-length", "16", "--vocab-size", "64",
            "--micro-batch-size", "1", "--global-batch-size", "1", "--train-iters", "1"]
    for flag, want in ((["--cpu-fused-adam"], True), ([], False)):
        train, model_cfg = parse_args(argv + flag)
        t = Trainer(train, model_cfg)
        groups = [g for o in t.optimizer.chained_optimizers for g in o.optimizer.param_groups]
        assert groups and all(bool(g["fused"]) is want for g in groups)
        t.close()
