"""The trainable side of a run: megatron-core's DDP wrapper and optimizer.

One place builds both, so that options touching them (the distributed
optimizer, overlapped gradient reduction, precision) are set for every
stage at once.
"""

from __future__ import annotations

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

from megatron_dsm.training.arguments import TrainConfig


def wrap_ddp(model, tconfig, *, distributed_optimizer: bool = False):
    """megatron-core DDP around ``model``; gradients are reduced in fp32 and
    finalised by megatron-core's ``finalize_model_grads``.  With
    ``distributed_optimizer`` the gradient buffer is laid out in DP shards
    and reduce-scattered (the layout ``DistributedOptimizer`` needs)."""
    ddp_cfg = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False,
        use_distributed_optimizer=distributed_optimizer, check_for_nan_in_grad=False,
        average_in_collective=False)
    ddp = DistributedDataParallel(config=tconfig, ddp_config=ddp_cfg, module=model)
    tconfig.finalize_model_grads_func = finalize_model_grads
    return ddp


def build_optimizer(model, train: TrainConfig, tconfig, *, bf16: bool):
    """megatron-core's Adam(W) over the DDP-wrapped ``model``; its
    ``DistributedOptimizer`` (state sharded over DP) with
    ``--use-distributed-optimizer`` (``model`` must be wrapped for it:
    ``wrap_ddp(distributed_optimizer=True)``)."""
    ocfg = OptimizerConfig(
        optimizer="adam", lr=train.lr, min_lr=train.min_lr, weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1, adam_beta2=train.adam_beta2, adam_eps=train.adam_eps,
        clip_grad=train.clip_grad, bf16=bf16, params_dtype=tconfig.params_dtype,
        use_distributed_optimizer=train.use_distributed_optimizer)
    opt = get_megatron_optimizer(ocfg, [model])
    if train.cpu_fused_adam:
        use_fused_cpu_adam(opt)
    return opt


def use_fused_cpu_adam(optimizer) -> int:
    """Switch megatron-core's torch AdamW fallback to torch's fused CPU kernel.

    Without transformer-engine or apex, ``get_megatron_optimizer`` builds
    ``torch.optim.AdamW`` with default settings, which on CPU tensors is the
    per-parameter loop (about ten dispatches per tensor); the fused kernel
    does the same update in one pass.  Opt-in (``--cpu-fused-adam``): the
    results differ from the loop by rounding, and long runs drift apart from
    there.  Only groups whose parameters are all fp32/bf16 CPU tensors are
    switched; returns how many."""
    inner = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    n = 0
    for o in inner:
        torch_opt = getattr(o, "optimizer", None)
        if not isinstance(torch_opt, (torch.optim.AdamW, torch.optim.Adam)):
            continue
        for group in torch_opt.param_groups:
            if group.get("fused") or group.get("differentiable") or not group["params"]:
                continue
            if all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.bfloat16)
                   for p in group["params"]):
                group["fused"], group["foreach"] = True, False
                n += 1
    return n
