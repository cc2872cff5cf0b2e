#!/usr/bin/env python
"""GRPO throughput on CPU: TRL's GRPOTrainer vs this project, same run.

The peer side is ``../shared/bench/trl_grpo_baseline.py`` run as is (its
header lists every setting: tiny Llama 4 x 128, ffn 512, 4 heads, untied,
a 512-entry byte-level BPE, G=8, one prompt x 8 completions per optimizer
step, 16 new tokens, temperature 1, beta 0.04, eps 0.2, loss_type grpo
(per-sequence token mean), lr 1e-5 linear, max grad norm 1, fused AdamW,
fp32, 20 steps with 2 discarded).  This side builds the same shape as a megatron-core
GPTModel, uses the tokenizer the harness wrote (through the project's
HFTokenizer), the same 2,000 prompts "Q: {a}+{b}=? A:" and the same reward
(1 if the first integer in the completion equals a+b), and runs the same
number of steps of ``RLStage`` on ``Trainer.fit`` (rollout with the shared KV-cached sampler,
reward, reference log-probs from the in-process copy, loss, backward,
optimizer) with the same timing rule: seconds per step between the end of
step WARMUP and the end of the last step; samples/s = 8 / that.

Both sides use THREADS torch threads (default 2).  The pair runs ROUNDS
times (default 9); last line: the medians, and ``... ratio project/trl=<x>``
= the median of the per-round ratios (each the harness's rule: mean step
time after warm-up).  ``median_step_ratio`` applies the median step instead
of the mean to both sides' step times (the harness prints them).

Pairing.  This machine's speed drifts by a third and more within seconds
(seen: TRL 75 then 104 samples/s back to back), so the two timed windows of
a round are put next to each other: the project worker builds its model
first and waits (idle, blocked on stdin), the TRL harness then runs from
start to end, and the moment it exits the worker is told to start its
steps.  The gap between TRL's last timed step and the project's first is
the harness's exit, not a Python start-up and model build.

The project side samples with the rollout engine its RL loop picks by
default (``--rollout-engine auto``: ``models.direct_decode``, a module-free
forward over the policy's own weights) and trains through megatron-core's
GPTModel with the G completions of a question packed behind one copy of
the prompt (``rl/packing.py``; the reference uses the same layout); TRL
samples with Hugging Face ``generate`` and trains on one row per completion.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench" / "trl_grpo_baseline.py"
THREADS = int(os.environ.get("THREADS", "2"))
MAX_STEPS = int(os.environ.get("MAX_STEPS", "20"))
WARMUP = int(os.environ.get("WARMUP", "2"))
WORK = Path(os.environ.get("WORK", "/tmp/grpo_vs_trl"))
ROUNDS = int(os.environ.get("ROUNDS", "9"))
G, MAX_NEW = 8, 16

_NUM = re.compile(r"-?\d+")


class FirstIntegerReward:
    """The harness's reward: 1.0 if the first integer in the completion is the answer."""

    def __call__(self, questions, completions, references):
        import torch

        ok = []
        for c, r in zip(completions, references):
            m = _NUM.search(c)
            ok.append(m is not None and int(m.group()) == int(r))
        t = torch.tensor(ok, dtype=torch.bool)
        return t.float(), t


def project_side() -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from megatron_dsm.data.tokenizer import HFTokenizer
    from megatron_dsm.rl.config import RLConfig
    from megatron_dsm.rl.loop import RLStage
    from megatron_dsm.rl.rollout import Item
    from megatron_dsm.training.arguments import parse_args
    from megatron_dsm.training.loop import Trainer

    tok = HFTokenizer(WORK / "init_model")
    rng = random.Random(0)
    items = []
    for _ in range(2000):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        items.append(Item(f"Q: {a}+{b}=? A:", f"Q: {a}+{b}=? A:", str(a + b)))
    argv = ["--num-layers", "4", "--hidden-size", "128", "--num-attention-heads", "4",
            "--ffn-hidden-size", "512", "--seq-length", "128", "--vocab-size", str(tok.vocab_size),
            "--norm-epsilon", "1e-6", "--lr", "1e-5", "--lr-decay-style", "linear",
            "--weight-decay", "0.0", "--adam-beta2", "0.999", "--clip-grad", "1.0",
            "--micro-batch-size", "8", "--global-batch-size", "8", "--train-iters", str(MAX_STEPS),
            "--log-interval", "1000", "--seed", "42", "--algorithm", "grpo",
            "--prompts-per-step", "1", "--group-size", str(G), "--max-new-tokens", str(MAX_NEW),
            "--temperature", "1.0", "--beta", "0.04", "--eps-low", "0.2",
            "--loss-agg", "seq-mean-token-mean", "--tokenizer-type", "hf",
            # the harness runs optim="adamw_torch_fused": the same kernel here
            "--cpu-fused-adam"]
    train, model_cfg, rl = parse_args(argv, extra=RLConfig)
    trainer = Trainer(train, model_cfg)
    torch.set_num_threads(THREADS)
    stage = RLStage(rl, tok, items, [], reward=FirstIntegerReward())
    trainer.attach(stage)
    params = sum(p.numel() for p in trainer.model.parameters())
    # set up: wait for the go (see "Pairing" in the module docstring)
    print("READY", flush=True)
    sys.stdin.readline()
    ends, lens, rewards = [], [], []

    def on_step(it, fields):
        ends.append(time.perf_counter())
        lens.append(fields["response length"])
        rewards.append(fields["reward mean"])

    t_begin = time.perf_counter()
    trainer.fit(stage, on_step=on_step)
    s_per_step = (ends[-1] - ends[WARMUP - 1]) / (MAX_STEPS - WARMUP)
    steps = [b - a for a, b in zip([t_begin] + ends[:-1], ends)]
    return {"samples_per_s": G / s_per_step, "s_per_step": s_per_step, "params": params,
            "padded_vocab": model_cfg.padded_vocab_size(), "mean_completion_len": sum(lens) / len(lens),
            "mean_reward": sum(rewards) / len(rewards), "threads": torch.get_num_threads(),
            "steps_s": [round(s, 4) for s in steps], "rollout_engine": type(stage.sampler.engine).__name__}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--project-worker":
        print("RESULT " + json.dumps(project_side()), flush=True)
        return 0
    if not SHARED_BENCH.is_file():
        print(f"error: the TRL harness is missing: {SHARED_BENCH} (expected ../shared/bench "
              f"next to the repository)", file=sys.stderr)
        return 2
    env = dict(os.environ, THREADS=str(THREADS), MAX_STEPS=str(MAX_STEPS), WARMUP=str(WARMUP),
               WORK=str(WORK), OMP_NUM_THREADS=str(THREADS), PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    if not prepare_work(env):
        return 1
    rounds = []
    for r in range(ROUNDS):
        worker = start_project(env)
        if worker is None:
            return 1
        trl = run_trl(env)
        ours = finish_project(worker, go=trl is not None)
        if trl is None or ours is None:
            return 1
        ratio = ours["samples_per_s"] / float(trl["samples_per_s"])
        step_ratio = median_step_rate(ours["steps_s"]) / median_step_rate(trl["steps_s"])
        rounds.append((float(trl["samples_per_s"]), ours["samples_per_s"], ratio, step_ratio))
        print(f"round {r + 1}/{ROUNDS}: trl_samples_per_s={rounds[-1][0]:.2f} "
              f"project_samples_per_s={ours['samples_per_s']:.2f} ratio={ratio:.2f} "
              f"median_step_ratio={step_ratio:.2f}", flush=True)
    med = [statistics.median(x) for x in zip(*rounds)]
    print(f"trl_samples_per_s={med[0]:.2f} project_samples_per_s={med[1]:.2f} G={G} max_new={MAX_NEW} "
          f"trl_params={trl['params']} project_params={ours['params']} threads={THREADS} "
          f"median_step_ratio={med[3]:.2f} "
          f"rounds={ROUNDS} ratio project/trl={med[2]:.2f}")
    return 0


def prepare_work(env) -> bool:
    """The project worker reads the tokenizer the harness writes to
    WORK/init_model, and starts before the harness (see "Pairing"), so on a
    fresh WORK the harness's own build_init_model writes it first, untimed."""
    if (WORK / "init_model" / "tokenizer.json").is_file():
        return True
    print(f"preparing {WORK}: the TRL harness's tokenizer and initial model (first run)", flush=True)
    code = ("import os, runpy, sys; m = runpy.run_path(sys.argv[1], run_name='prepare'); "
            "m['build_init_model'](os.path.join(m['WORK'], 'init_model'))")
    p = subprocess.run([sys.executable, "-c", code, str(SHARED_BENCH)], env=env, capture_output=True, text=True)
    if p.returncode != 0 or not (WORK / "init_model" / "tokenizer.json").is_file():
        print(f"error: could not prepare {WORK} with the TRL harness:\n{p.stderr[-3000:]}", file=sys.stderr)
        return False
    return True


def run_trl(env) -> dict | None:
    p = subprocess.run([sys.executable, str(SHARED_BENCH)], env=env, capture_output=True, text=True)
    trl_line = [l for l in p.stdout.splitlines() if l.startswith("trl_grpo ")]
    if p.returncode != 0 or not trl_line:
        print(f"error: TRL harness failed:\n{p.stderr[-3000:]}", file=sys.stderr)
        return None
    print(trl_line[-1], flush=True)
    out = dict(kv.split("=", 1) for kv in trl_line[-1].split()[1:])
    steps = [l for l in p.stdout.splitlines() if l.startswith("STEPS_S ")]
    out["steps_s"] = json.loads(steps[-1][8:]) if steps else []
    return out


def median_step_rate(steps_s: list) -> float:
    """Samples/s from the median post-warm-up step (a step slowed by the
    machine moves a mean, not a median); the same rule for both sides."""
    timed = steps_s[WARMUP:]
    return G / statistics.median(timed) if timed else float("nan")


def start_project(env) -> subprocess.Popen | None:
    """The project worker, built and waiting for its go (None if it failed)."""
    w = subprocess.Popen([sys.executable, __file__, "--project-worker"], env=env, cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    for line in w.stdout:
        if line.startswith("READY"):
            return w
    print(f"error: project side failed while setting up:\n{w.stderr.read()[-3000:]}", file=sys.stderr)
    w.wait()
    return None


def finish_project(w: subprocess.Popen, go: bool) -> dict | None:
    if not go:
        w.kill()
        w.wait()
        return None
    out, err = w.communicate("go\n")
    res = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if w.returncode != 0 or not res:
        print(f"error: project side failed:\n{err[-3000:]}", file=sys.stderr)
        return None
    ours = json.loads(res[-1][7:])
    print("project " + json.dumps(ours), flush=True)
    return ours


if __name__ == "__main__":
    sys.exit(main())
