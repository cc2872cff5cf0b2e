#!/usr/bin/env python
"""GPU smoke test: the transformer-engine layer spec in bf16 on one GPU for a
~1B Llama config; prints tokens/s and MFU (model FLOPs utilisation, using
6 * matmul params * tokens + attention FLOPs against the GPU's dense bf16 peak).

Run through benchmarks/gpu_smoke.sh on a GPU host.  It refuses to run
without CUDA (a CPU figure would say nothing about the TE path).
"""
import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="llama-1b")
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    from megatron_dsm import platform

    if not platform.cuda_available():
        print("gpu_smoke: no CUDA device; run this on a GPU host", file=sys.stderr)
        return 2
    import torch

    from megatron_dsm.models.config import preset
    from megatron_dsm.models.gpt import transformer_engine_available
    from megatron_dsm.training.arguments import TrainConfig
    from megatron_dsm.training.loop import Trainer, gpt_forward_step

    cfg = preset(args.model, seq_length=args.seq_length)
    t = TrainConfig(model=args.model, micro_batch_size=args.micro_batch_size,
                    global_batch_size=args.micro_batch_size, train_iters=args.steps + args.warmup,
                    bf16=True, layout_independent_init=False, lr=1e-4)
    te = transformer_engine_available()
    trainer = Trainer(t, cfg)
    g = torch.Generator().manual_seed(0)
    S, B = args.seq_length, args.micro_batch_size
    tok = torch.randint(0, cfg.vocab_size, (B, S + 1), generator=g)
    batch = {"tokens": tok[:, :-1], "labels": tok[:, 1:], "loss_mask": torch.ones(B, S),
             "position_ids": torch.arange(S).expand(B, S)}
    times = []
    for i in range(args.warmup + args.steps):
        platform.synchronize()
        t0 = time.perf_counter()
        r = trainer.train_step(gpt_forward_step, [batch])
        platform.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    tokens_s = B * S / step
    n = cfg.num_parameters()
    # PaLM's model FLOPs: 6 per parameter per token (the input embedding is a
    # lookup, not a matmul, so it is left out) plus attention scores and
    # values, 12*L*h*S per token (full, not halved for the causal mask).
    matmul_params = n - cfg.padded_vocab_size() * cfg.hidden_size
    flops_per_token = 6 * matmul_params + 12 * cfg.num_layers * cfg.hidden_size * S
    name = platform.device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    mfu = tokens_s * flops_per_token / (peak * 1e12) if peak else float("nan")
    print(f"device: {name}; transformer-engine spec: {te}; bf16; {args.model} {n / 1e9:.2f}B params; "
          f"micro batch {B} x {S}; loss {r.metrics.get('lm loss', float('nan')):.3f}; "
          f"peak memory {platform.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"step {step * 1000:.1f} ms | tokens/s {tokens_s:,.0f} | model TFLOP/s {tokens_s * flops_per_token / 1e12:.0f} | MFU {mfu:.1%}")
    platform.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
