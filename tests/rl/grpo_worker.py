"""Runs short GRPO scenarios through the real loop (Trainer.fit + RLStage +
megatron-core GPTModel + the shared sampler) and writes what it saw as JSON.  Used by
test_grpo.py in a subprocess (megatron's parallel state is per process)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from megatron_dsm.data.tokenizer import build_tokenizer  # noqa: E402
from megatron_dsm.rl.loop import RLStage  # noqa: E402
from megatron_dsm.rl.rewards import RuleReward  # noqa: E402
from megatron_dsm.rl.config import RLConfig  # noqa: E402
from megatron_dsm.rl.toy import items_from_problems, toy_items  # noqa: E402
from megatron_dsm.training.arguments import parse_args  # noqa: E402
from megatron_dsm.models.gpt import unwrap  # noqa: E402
from megatron_dsm.training.logging import parse_line  # noqa: E402
from megatron_dsm.training.loop import Trainer  # noqa: E402

BASE = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--ffn-hidden-size", "128", "--seq-length", "160", "--vocab-size", "259",
        "--lr", "1e-3", "--lr-decay-style", "constant", "--weight-decay", "0.0",
        "--micro-batch-size", "8", "--global-batch-size", "16", "--log-interval", "1",
        "--prompts-per-step", "4", "--group-size", "4", "--max-new-tokens", "12",
        "--task-train-size", "40", "--task-heldout-size", "8", "--rl-eval-size", "8",
        "--seed", "3"]


def make(extra: list[str], reward=None):
    train, model_cfg, rl = parse_args(BASE + extra, extra=RLConfig)
    tok = build_tokenizer("byte")
    tr_p, held_p = toy_items(rl)
    trainer = Trainer(train, model_cfg)
    # format penalty: random policies sometimes print no number at all -> reward spread
    reward = reward or RuleReward(1.0, 0.0, format_penalty=0.5)
    loop = RLStage(rl, tok, items_from_problems(tr_p), items_from_problems(held_p), reward=reward)
    return trainer, loop


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in unwrap(model).parameters()])


def ref_flat(loop) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in loop.reference.model.parameters()])


def scenario_run(work: Path) -> dict:
    """3 steps, RL iterations of 2 steps, checkpoint at 3; reference reset check."""
    save = work / "ckpt"
    trainer, loop = make(["--train-iters", "3", "--rl-iteration-steps", "2", "--beta", "0.04",
                          "--save", str(save), "--save-interval", "3",
                          "--tensorboard-dir", str(work / "tb")])
    trainer.attach(loop)
    p0 = flat(trainer.model)
    ref0 = ref_flat(loop)
    seen = {}

    def hook(lp):
        seen["policy_at_boundary"] = flat(lp.trainer.model)
        seen["ref_before_reset"] = ref_flat(lp)
        seen["step"] = lp.trainer.iteration

    loop.hooks.append(hook)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        trainer.fit(loop)
    lines = [parse_line(l) for l in buf.getvalue().splitlines()]
    lines = [l for l in lines if l]
    ref_end = ref_flat(loop)
    out = {
        "lines": lines,
        "stdout": buf.getvalue()[-3000:],
        "ref_init_equals_policy_init": bool(torch.equal(ref0, p0)),
        "boundary_step": seen.get("step"),
        "ref_before_reset_equals_init": bool(torch.equal(seen["ref_before_reset"], p0)),
        "ref_after_reset_equals_boundary_policy": bool(torch.equal(ref_end, seen["policy_at_boundary"])),
        "policy_moved_since_boundary": bool(not torch.equal(flat(trainer.model), seen["policy_at_boundary"])),
        "rl_iteration": loop.rl_iteration,
        "order": loop.order.state(),
        "next_questions": loop.order.take(4),
        "tb_files": sorted(os.listdir(work / "tb")),
        "resets": loop.reference.resets,
        "ref_checksum": float(ref_end.double().pow(2).sum()),
        "policy_checksum": float(flat(trainer.model).double().pow(2).sum()),
    }
    trainer.close()
    return out


def scenario_resume(work: Path) -> dict:
    """Load the checkpoint written by scenario_run: RL iteration, data position,
    reference weights and policy come back."""
    save = work / "ckpt"
    trainer, loop = make(["--train-iters", "4", "--rl-iteration-steps", "2", "--beta", "0.04",
                          "--load", str(save)])
    common = trainer.attach(loop)
    out = {"iteration": trainer.iteration, "rl_iteration": loop.rl_iteration,
           "order": loop.order.state(), "next_questions": loop.order.take(4),
           "loaded_from": common["loaded_from"],
           "ref_checksum": float(ref_flat(loop).double().pow(2).sum()),
           "policy_checksum": float(flat(trainer.model).double().pow(2).sum()),
           "published_files": sorted(os.listdir(common["loaded_from"]))}
    trainer.close()
    # A checkpoint that lost its frozen reference is refused, not silently
    # given a freshly initialised (random) reference.
    broken = work / "broken"
    shutil.copytree(save, broken)
    for d in broken.glob("iter_*/rl_reference"):
        shutil.rmtree(d)
    trainer, loop = make(["--train-iters", "4", "--rl-iteration-steps", "2", "--beta", "0.04",
                          "--load", str(broken)])
    try:
        trainer.attach(loop)
        out["missing_reference_error"] = None
    except FileNotFoundError as e:
        out["missing_reference_error"] = str(e)
    trainer.close()
    return out


def scenario_zero_spread(work: Path) -> dict:
    """Every group gets the same reward: no policy gradient at all (beta 0)."""
    class Constant(RuleReward):
        def __call__(self, questions, completions, references):
            _, ok = super().__call__(questions, completions, references)
            return torch.full((len(completions),), 0.5), ok

    trainer, loop = make(["--train-iters", "1", "--beta", "0.0"], reward=Constant())
    p0 = flat(trainer.model)
    m = trainer.fit(loop)
    out = {"metrics": m, "params_unchanged": bool(torch.equal(p0, flat(trainer.model)))}
    # the same loop with a spread of rewards does move the policy
    trainer.close()
    trainer2, loop2 = make(["--train-iters", "1", "--beta", "0.0"])
    q0 = flat(trainer2.model)
    m2 = trainer2.fit(loop2)
    out["spread_metrics"] = m2
    out["spread_params_changed"] = bool(not torch.equal(q0, flat(trainer2.model)))
    # held-out accuracy sampled at T=1: n samples per question, seeded
    few = loop2.heldout_items[:5]
    out["sampled_eval"] = [loop2.accuracy(few, temperature=1.0, n=4, seed=3) for _ in range(2)]
    try:
        loop2.accuracy(few, n=4)
        out["greedy_n_error"] = None
    except ValueError as e:
        out["greedy_n_error"] = str(e)
    trainer2.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["run_resume", "zero_spread"])
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.scenario == "run_resume":
        res = {"run": scenario_run(work), "resume": scenario_resume(work)}
    else:
        res = scenario_zero_spread(work)
    if torch.distributed.get_rank() == 0:
        Path(a.out).write_text(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
