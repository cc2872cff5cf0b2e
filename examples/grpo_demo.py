"""GRPO learning demo on CPU: the project builds everything itself.

1. generates two-operation arithmetic word problems (operands 1-9; train /
   dev / held-out splits);
2. uses the project's byte tokenizer (char level for this ASCII task);
3. SFTs a tiny Llama-architecture GPTModel through the project's Trainer
   for ``--sft-max-steps`` steps on targets that are half worked solutions
   ("3+8=11. 11-4=7. The answer is 7.") and half bare answers ("The answer
   is 7.") (cached in WORKDIR/sft: a second run reuses it);
4. runs RL (GRPO with the rule reward by default; ``--algorithm`` and the
   other RL flags select RFT / Online RFT / GRPO+PS / PPO) from that policy;
5. measures held-out accuracy before and after (sampled at the rollout
   temperature, then greedy), writes a PNG of reward and accuracy against
   steps, and ends with the greedy line
   ``heldout accuracy before=0.xxx after=0.yyy``.

Why the mixed SFT targets: real SFT sets mix chain-of-thought solutions with
bare answers, and a 2-layer model answers a two-operation problem in one
go far worse than step by step (measured on the demo's SFT policy: 8% of
its bare greedy answers right against 57% of its worked ones).  After SFT it still answers bare on about half the questions,
so its greedy accuracy is low while many of its samples are right: the
regime where the paper finds RL helps (Maj@K -> Top1).  The rule reward
alone has to teach it that writing the steps pays.

Every option of training/arguments.py and rl/config.py is accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from megatron_dsm.checkpoint import read_latest  # noqa: E402
from megatron_dsm.data.tokenizer import build_tokenizer  # noqa: E402
from megatron_dsm.io import write_json  # noqa: E402
from megatron_dsm.models.generation import SamplingParams  # noqa: E402
from megatron_dsm.rl.config import RLConfig  # noqa: E402
from megatron_dsm.rl.loop import RLStage  # noqa: E402
from megatron_dsm.rl.rewards import ArithmeticStepReward, RuleReward  # noqa: E402
from megatron_dsm.rl.toy import ToySFTStage, items_from_problems, toy_items  # noqa: E402
from megatron_dsm.training.arguments import parse_args  # noqa: E402
from megatron_dsm.training.loop import Trainer  # noqa: E402


def demo_args(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workdir", default="runs/grpo_demo")
    p.add_argument("--sft-max-steps", type=int, default=400)
    p.add_argument("--sft-target", type=float, default=None,
                   help="stop SFT early once greedy dev accuracy reaches this (default: never)")
    p.add_argument("--sft-lr", type=float, default=2e-3)
    p.add_argument("--sft-eval-every", type=int, default=100)
    p.add_argument("--sft-batch", type=int, default=32)
    p.add_argument("--sft-direct-share", type=float, default=0.5,
                   help="share of SFT targets that give only the final answer (rl/toy.py)")
    p.add_argument("--eval-samples", type=int, default=4,
                   help="samples per held-out question for the sampled accuracy (T = --temperature)")
    p.add_argument("--plot", default=None, help="PNG path (default WORKDIR/<algorithm>_curves.png)")
    p.add_argument("--tag", default=None, help="name of this RL run (default: the algorithm)")
    return p.parse_known_args(argv)


DEFAULTS = ["--num-layers", "2", "--hidden-size", "128", "--num-attention-heads", "4",
            "--ffn-hidden-size", "256", "--seq-length", "160", "--vocab-size", "259",
            "--lr", "2e-4", "--lr-decay-style", "constant", "--weight-decay", "0.0",
            "--adam-beta2", "0.99", "--clip-grad", "1.0", "--micro-batch-size", "64",
            "--global-batch-size", "128", "--train-iters", "200", "--log-interval", "5",
            "--prompts-per-step", "16", "--group-size", "8", "--max-new-tokens", "48",
            "--beta", "0.0", "--rl-eval-interval", "25", "--rl-eval-size", "300", "--seed", "1",
            "--task-max-value", "9", "--task-heldout-size", "300", "--task-two-step-prob", "1.0"]


def main(argv=None) -> int:
    demo, rest = demo_args(sys.argv[1:] if argv is None else argv)
    train, model_cfg, rl = parse_args(DEFAULTS + rest, extra=RLConfig)
    work = Path(demo.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tag = demo.tag or (rl.algorithm if rl.algorithm != "grpo" else
                       f"grpo_{'os' if rl.supervision == 'outcome' else 'ps'}")
    tok = build_tokenizer(rl.tokenizer_type, rl.tokenizer_model)
    if model_cfg.vocab_size is None:
        model_cfg.vocab_size = tok.vocab_size
    train_p, held_p = toy_items(rl)
    dev_p, train_p = train_p[:200], train_p[200:]
    reward = RuleReward(rl.reward_correct, rl.reward_wrong, rl.format_penalty)
    held = items_from_problems(held_p)
    t_start = time.perf_counter()
    if read_latest(work / "sft") is None:
        sft(demo, train, model_cfg, rl, tok, reward, train_p, items_from_problems(dev_p), work)
        print(f"> SFT done ({time.perf_counter() - t_start:.0f}s)", flush=True)

    # -- RL from the SFT policy ------------------------------------------------
    rl_cfg = dataclasses.replace(train, load=str(work / "sft"), finetune=True,
                                 global_batch_size=rl.prompts_per_step * rl.group_size,
                                 save=train.save, tensorboard_dir=train.tensorboard_dir
                                 or str(work / "tb" / tag))
    trainer = Trainer(rl_cfg, model_cfg)
    step_reward = ArithmeticStepReward(rl.reward_correct, rl.reward_wrong) \
        if rl.supervision == "process" else None
    stage = RLStage(rl, tok, items_from_problems(train_p), held, reward=reward, step_reward=step_reward)
    trainer.attach(stage)
    sampled = dict(temperature=rl.temperature, n=demo.eval_samples, seed=train.seed)
    forms_before = answer_forms(stage, held)
    before_s = stage.accuracy(**sampled)
    trainer.writer.text(f"> {tag}: held-out accuracy before RL, sampled (T={rl.temperature:g}, "
                        f"{demo.eval_samples}/question): {before_s:.3f}")
    curve = {"step": [], "reward": [], "accuracy": [], "eval_step": [0], "heldout": []}

    def on_step(it, fields):
        curve["step"].append(it)
        curve["reward"].append(fields["reward mean"])
        curve["accuracy"].append(fields["accuracy"])
        if "heldout accuracy" in fields:
            curve["eval_step"].append(it)
            curve["heldout"].append(fields["heldout accuracy"])

    last = trainer.fit(stage, on_step=on_step)
    before = last["initial heldout accuracy"]
    curve["heldout"].insert(0, before)
    if curve["eval_step"][-1] != trainer.iteration:   # stopped before the last step
        curve["eval_step"].append(trainer.iteration)
        curve["heldout"].append(stage.accuracy())
    after = curve["heldout"][-1]
    after_s = stage.accuracy(**sampled)
    forms_after = answer_forms(stage, held)
    curve["sampled"] = {"before": before_s, "after": after_s, "temperature": rl.temperature,
                        "samples_per_question": demo.eval_samples}
    trainer.close()
    (work / f"{tag}_curves.json").write_text(json.dumps(curve))
    plot = Path(demo.plot) if demo.plot else work / f"{tag}_curves.png"
    if torch.distributed.get_rank() == 0:
        write_plot(curve, plot, tag)
        print(f"> wrote {plot}; total {time.perf_counter() - t_start:.0f}s", flush=True)
        print(f"heldout greedy answers written as worked steps before={_forms(forms_before)} "
              f"after={_forms(forms_after)}", flush=True)
        print(f"heldout sampled accuracy (T={rl.temperature:g}, {demo.eval_samples} per question) "
              f"before={before_s:.3f} after={after_s:.3f}", flush=True)
        print(f"heldout accuracy before={before:.3f} after={after:.3f}", flush=True)
    return 0


def sft(demo, train, model_cfg, rl, tok, reward, problems, dev, work: Path) -> None:
    """1. SFT of the initial policy into WORKDIR/sft (a second run reuses it)."""
    sft_cfg = dataclasses.replace(train, lr=demo.sft_lr, micro_batch_size=demo.sft_batch,
                                  global_batch_size=demo.sft_batch, save=str(work / "sft"),
                                  load=None, train_iters=demo.sft_max_steps,
                                  tensorboard_dir=None, log_json=None)
    trainer = Trainer(sft_cfg, model_cfg)
    stage = ToySFTStage(problems, dev, tok, reward, rl, eval_every=demo.sft_eval_every,
                        target=demo.sft_target, seed=train.seed, direct_share=demo.sft_direct_share)
    last = trainer.fit(stage)
    trainer.close()
    write_json(work / "sft_result.json", {"steps": trainer.iteration, "dev_accuracy": last["dev accuracy"],
                                          "history": stage.history})
    print(f"> SFT: {trainer.iteration} steps, dev accuracy {last['dev accuracy']:.3f}", flush=True)


def answer_forms(stage, items) -> dict:
    """Greedy held-out answers by form: the share written as worked steps (at
    least one equation, the SFT data's worked-solution form) and the accuracy
    of each form."""
    items = list(items)[:stage.cfg.rl_eval_size]
    params = SamplingParams(max_new_tokens=stage.cfg.max_new_tokens, stop_ids=(stage.sampler.eod,))
    out = stage.sampler.generate(items, params, weights_from=stage.trainer.model)
    texts = [stage.sampler.decode_response(c) for c in out.completions]
    _, ok = stage.reward([it.question for it in items], texts, [it.answer for it in items])
    worked = ["=" in t for t in texts]
    n_w = sum(worked)

    def acc(flag):
        hits = [o for o, w in zip(ok.tolist(), worked) if w == flag]
        return sum(hits) / len(hits) if hits else float("nan")

    return {"share": n_w / len(items), "worked_acc": acc(True), "bare_acc": acc(False)}


def _forms(f: dict) -> str:
    def acc(x):
        return "-" if x != x else f"{x:.3f}"     # nan: no answer of that form
    return f"{f['share']:.3f} (right: worked {acc(f['worked_acc'])}, bare {acc(f['bare_acc'])})"


def write_plot(curve: dict, path: Path, title: str) -> None:
    import matplotlib  # optional dependency: only this plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(curve["step"], curve["reward"], label="reward mean (train rollouts)")
    ax.plot(curve["step"], curve["accuracy"], label="accuracy (train rollouts)", alpha=0.7)
    ax.plot(curve["eval_step"], curve["heldout"], "o-", label="held-out accuracy (greedy)")
    if "sampled" in curve:
        sp = curve["sampled"]
        ax.plot([0, curve["eval_step"][-1]], [sp["before"], sp["after"]], "s--",
                label=f"held-out accuracy (sampled, T={sp['temperature']:g})")
    ax.set_xlabel("RL step")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{title} on generated arithmetic word problems")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
