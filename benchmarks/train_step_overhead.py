#!/usr/bin/env python
"""Step time of this project's training loop against a bare megatron-core
forward/backward/optimizer step on the same tiny config, in one process.

"Ours" is Trainer.train_step fed by the real data path (GPTDataset through
BatchOrder, collation, metrics reduction, LR schedule).  "Bare" is the same
megatron-core pieces called directly on batches already in memory: a
get_forward_backward_func call, optimizer.step(), nothing else.  Steps
alternate between the two so machine noise hits both alike; medians are
compared.  Last line: the ratio (target <= 1.10).
"""
import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "training"))

import torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--global-batch-size", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsm_overhead_") as tmp:
        measure(args, tmp)


def measure(args, tmp: str):
    from synthetic import write_corpus

    from megatron_dsm.models.config import preset
    from megatron_dsm.models.gpt import build_model
    from megatron_dsm.training.arguments import TrainConfig
    from megatron_dsm.training.data import BatchOrder, build_datasets, parse_data_path
    from megatron_dsm.training.loop import Trainer
    from megatron_dsm.training.pretrain import gpt_forward_step, lm_loss_func

    prefix = write_corpus(os.path.join(tmp, "syn"), vocab=4096, docs=400, doc_len=400)
    cfg = preset("tiny", vocab_size=4096)  # the synthetic corpus's vocab (it has no tokenizer sidecar)
    t = TrainConfig(model="tiny", micro_batch_size=args.micro_batch_size,
                    global_batch_size=args.global_batch_size,
                    train_iters=args.steps + args.warmup, log_interval=1000)
    trainer = Trainer(t, cfg)
    train_ds, _, _ = build_datasets(parse_data_path(prefix), seq_length=cfg.seq_length, seed=1,
                                    split="100,0,0", num_samples=[t.train_iters * t.global_batch_size, 0, 0],
                                    cache_dir=os.path.join(tmp, "cache"), vocab_size=cfg.vocab_size, eod=0)
    order = BatchOrder(train_ds, global_batch=t.global_batch_size, micro_batch=t.micro_batch_size,
                       dp_rank=0, dp_size=1)

    # Bare megatron-core: the same model shape, DDP, optimizer, schedule.
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    bare = DistributedDataParallel(trainer.tconfig, DistributedDataParallelConfig(grad_reduce_in_fp32=True),
                                   build_model(cfg, trainer.tconfig))
    bare_opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=t.lr, weight_decay=0.1,
                                                      adam_beta2=0.95, clip_grad=1.0), [bare])
    nmb = t.global_batch_size // t.micro_batch_size
    fixed = [next(iter(order.microbatches())) for _ in range(nmb)]
    order.consumed_samples = 0
    fb = get_forward_backward_func()

    def bare_fwd(it, model):
        b = next(it)
        out = model(b["tokens"], b["position_ids"], None, labels=b["labels"])
        return out, functools.partial(lm_loss_func, b["loss_mask"])

    def bare_step():
        bare.zero_grad_buffer()
        bare_opt.zero_grad()
        fb(forward_step_func=bare_fwd, data_iterator=iter(fixed), model=[bare],
           num_microbatches=nmb, seq_length=cfg.seq_length, micro_batch_size=t.micro_batch_size)
        bare_opt.step()

    def ours_step():
        trainer.train_step(gpt_forward_step, list(order.microbatches()))

    ours, base = [], []
    for i in range(args.warmup + args.steps):
        for fn, acc in ((ours_step, ours), (bare_step, base)) if i % 2 == 0 else ((bare_step, base), (ours_step, ours)):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                acc.append(dt)
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"tiny model {cfg.num_parameters():,} params, global batch {t.global_batch_size} x {cfg.seq_length} tokens, "
          f"{args.steps} steps each, torch threads {torch.get_num_threads()}")
    print(f"megatron-dsm loop step: {mo * 1000:.1f} ms (median)")
    print(f"bare megatron-core step: {mb * 1000:.1f} ms (median)")
    print(f"ratio loop/bare: {mo / mb:.3f}")
    from megatron_dsm import platform
    platform.destroy_distributed()


if __name__ == "__main__":
    main()
