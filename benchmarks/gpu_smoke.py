#!/usr/bin/env python
"""GPU smoke test: the transformer-engine layer spec in bf16 on one GPU for a
~1B Llama config; prints tokens/s and MFU (model FLOPs utilisation:
ModelConfig.train_flops_per_token against the GPU's dense bf16 peak).

Run through benchmarks/gpu_smoke.sh on a GPU host.  Without CUDA it refuses
(a CPU figure says nothing about the TE path) unless given --cpu-check, which
runs the same code path on the CPU in fp32 with a small config so that CI
proves the script itself works before a GPU hour is spent on it.
"""
import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.gpu_flags import add_host_flags, add_model_flags  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors'
# data sheets; the longest name contained in the device name wins, so an
# "H100 PCIe" does not take the SXM figure.
PEAK_BF16_TFLOPS = {
    "A100": 312.0, "A10G": 70.0, "L4": 121.0, "L40S": 362.0,
    "H100": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.0, "GH200": 989.0,
    "H800": 989.0, "H20": 148.0, "B200": 2250.0, "GB200": 2500.0,
}


def peak_tflops(device_name: str) -> float | None:
    hits = [k for k in PEAK_BF16_TFLOPS if k.lower() in device_name.lower()]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(ap)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (the median is reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 peak, for a GPU not in the table")
    add_host_flags(ap)
    # gpu_smoke.sh passes the same flags to gpu_path_check.py, which has its own
    args, _ = ap.parse_known_args(argv)

    from megatron_dsm import platform

    cuda = platform.cuda_available()
    if not cuda and not args.cpu_check:
        print("gpu_smoke: no CUDA device; run this on a GPU host (or --cpu-check to test the script)",
              file=sys.stderr)
        return 2
    from megatron_dsm.models.gpt import transformer_engine_available

    te = transformer_engine_available()
    if cuda and not te and not args.allow_local_spec:
        print("gpu_smoke: transformer_engine does not import on this GPU host, so the TE spec cannot be "
              "measured; install the gpu extras (or --allow-local-spec)", file=sys.stderr)
        return 2
    import torch

    from megatron_dsm.models.config import preset
    from megatron_dsm.training.arguments import TrainConfig
    from megatron_dsm.training.loop import Trainer
    from megatron_dsm.training.pretrain import gpt_forward_step

    over = {"seq_length": args.seq_length}
    if args.vocab_size:
        over["vocab_size"] = args.vocab_size
    cfg = preset(args.model, **over)
    t = TrainConfig(model=args.model, micro_batch_size=args.micro_batch_size,
                    global_batch_size=args.micro_batch_size, train_iters=args.steps + args.warmup,
                    bf16=cuda, layout_independent_init=False, lr=1e-4)
    trainer = Trainer(t, cfg)
    g = torch.Generator().manual_seed(0)
    S, B = args.seq_length, args.micro_batch_size
    tok = torch.randint(0, cfg.vocab_size, (B, S + 1), generator=g)
    batch = {"tokens": tok[:, :-1], "labels": tok[:, 1:], "loss_mask": torch.ones(B, S),
             "position_ids": torch.arange(S).expand(B, S)}
    times, losses = [], []
    platform.reset_peak_memory()
    for i in range(args.warmup + args.steps):
        platform.synchronize()
        t0 = time.perf_counter()
        r = trainer.train_step(gpt_forward_step, [batch])
        platform.synchronize()
        losses.append(r.metrics["lm loss"])
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    tokens_s = B * S / step
    flops_per_token = cfg.train_flops_per_token(S)
    name = platform.device_name()
    peak = args.peak_tflops or peak_tflops(name)
    tflops = tokens_s * flops_per_token / 1e12
    mfu = f"{tflops / peak:.1%}" if peak else "n/a (device not in the peak table; give --peak-tflops)"
    print(f"device: {name}; transformer-engine spec: {te}; {'bf16' if cuda else 'fp32 (cpu check)'}; "
          f"{args.model} {cfg.num_parameters() / 1e9:.2f}B params; micro batch {B} x {S}; "
          f"lm loss {losses[0]:.3f} -> {losses[-1]:.3f}"
          + (f"; peak memory {platform.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""))
    print(f"step {step * 1000:.1f} ms | tokens/s {tokens_s:,.0f} | model TFLOP/s {tflops:.3g} | MFU {mfu}")
    platform.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
