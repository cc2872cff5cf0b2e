#!/usr/bin/env python
"""Peak memory of a GRPO step, with and without the memory orchestration
around rollouts, and of a PPO-with-critic step of the same size.

The paper's case for GRPO (section 4.1): PPO trains a value model as large
as the policy; GRPO takes its baseline from the group mean and needs none.
All runs use the same policy shape, the same rollout (B questions x G
outputs, same lengths), the same in-process reference model and the same
loop (``RLStage``); PPO adds ``rl.ppo.Critic`` (value model + its optimizer).
``grpo-offload`` is GRPO with ``--offload-training-state`` (gradient buffers
and optimizer state parked during rollouts) and ``--offload-reference`` (the
reference's weights in host memory between its passes).  ``grpo-rows`` is
GRPO without shared-prompt packing: the row layout PPO's critic also uses,
so ``ppo/grpo-rows`` compares the two algorithms like for like and
``ppo/grpo`` with GRPO's packing.  On a GPU that moves
them off the device; on a CPU host the parked bytes stay in host memory (the
gradient buffers are freed, the optimizer state and reference weights are
copied out and their storage freed), so the CPU figure shows what the
orchestration costs, not what it saves.

Each setting runs in its own process (so one's peak cannot hide the
other's).  On GPU the figure is ``platform.max_memory_allocated``; on CPU it
is the process's peak RSS (``ru_maxrss``) minus its RSS after imports, i.e.
everything the step needs: models, optimizer states, gradients, rollout and
activations.  Last line: ``... ratio ppo/grpo=<x>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


SETTINGS = {"grpo": ("grpo", []),
            "grpo-rows": ("grpo", ["--no-pack-prompts"]),
            "grpo-offload": ("grpo", ["--offload-training-state", "--offload-reference"]),
            "ppo": ("ppo", [])}


def worker(setting: str, a) -> dict:
    import torch  # noqa: F401

    from megatron_dsm import platform
    from megatron_dsm.data.tokenizer import build_tokenizer
    from megatron_dsm.rl.config import RLConfig
    from megatron_dsm.rl.loop import RLStage
    from megatron_dsm.rl.rewards import RuleReward
    from megatron_dsm.rl.toy import items_from_problems, toy_items
    from megatron_dsm.training.arguments import parse_args
    from megatron_dsm.training.loop import Trainer

    base = rss_mb()
    algorithm, extra = SETTINGS[setting]
    n = a.prompts * a.group
    argv = ["--num-layers", str(a.layers), "--hidden-size", str(a.hidden),
            "--num-attention-heads", "8", "--ffn-hidden-size", str(a.hidden * 4),
            "--seq-length", "256", "--vocab-size", "259", "--lr", "1e-5",
            "--lr-decay-style", "constant", "--micro-batch-size", str(a.micro_batch),
            "--global-batch-size", str(n), "--train-iters", str(a.steps), "--log-interval", "1000",
            "--algorithm", algorithm, "--prompts-per-step", str(a.prompts),
            "--group-size", str(a.group), "--max-new-tokens", str(a.max_new),
            "--beta", "0.04", "--task-train-size", "200", "--task-heldout-size", "10", *extra]
    train, model_cfg, rl = parse_args(argv, extra=RLConfig)
    tok = build_tokenizer("byte")
    tr_p, _ = toy_items(rl)
    platform.reset_peak_memory()
    trainer = Trainer(train, model_cfg)
    # no held-out questions: the run is the steps alone (PPO's critic is the algorithm's)
    stage = RLStage(rl, tok, items_from_problems(tr_p), [], reward=RuleReward())
    lens = []
    trainer.fit(stage, on_step=lambda it, fields: lens.append(fields["response length"]))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"setting": setting, "params": model_cfg.num_parameters(),
           "responses_per_step": n, "mean_response_length": sum(lens) / len(lens),
           "device": platform.device_name()}
    if platform.cuda_available():
        out["peak_mb"] = platform.max_memory_allocated() / 2**20
        out["measure"] = "max_memory_allocated"
    else:
        out["peak_mb"] = peak_rss - base
        out["measure"] = "peak RSS - RSS after imports"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=sorted(SETTINGS))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=48)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    a, rest = ap.parse_known_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a)), flush=True)
        return 0
    res = {}
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    for setting in SETTINGS:
        cmd = [sys.executable, __file__, "--worker", setting] + sys.argv[1:]
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            print(f"error: {setting} worker failed:\n{p.stderr[-3000:]}", file=sys.stderr)
            return 1
        res[setting] = json.loads(line[-1][7:])
        print(json.dumps(res[setting]), flush=True)
    g, r, o, p_ = (res[k]["peak_mb"] for k in ("grpo", "grpo-rows", "grpo-offload", "ppo"))
    print(f"grpo_step_peak_mb={g:.1f} grpo_rows_step_peak_mb={r:.1f} grpo_offload_step_peak_mb={o:.1f} "
          f"ppo_critic_step_peak_mb={p_:.1f} params={res['grpo']['params']} "
          f"responses={res['grpo']['responses_per_step']} measure='{res['grpo']['measure']}' "
          f"ratio offload/grpo={o / g:.2f} ratio ppo/grpo-rows={p_ / r:.2f} ratio ppo/grpo={p_ / g:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
