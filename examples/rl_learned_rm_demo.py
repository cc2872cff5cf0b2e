"""GRPO scored by learned reward models, on CPU, from nothing downloaded.

The paper's section 4 on the toy arithmetic task of examples/grpo_demo.py:

1. SFT policy: grpo_demo's (WORKDIR/sft; a second run reuses it);
2. reward-model data from the policy's own samples: tools/build_prm_data.py
   samples ``--rm-solutions`` solutions per question from the SFT checkpoint,
   grades them (ORM data) and labels their steps the Math-Shepherd way with
   ``--rm-shepherd-samples`` completions per step prefix, every prefix in one
   batched generate call (PRM data);
3. an outcome RM and a process RM trained from the SFT checkpoint with the
   RM recipe examples/configs/toy_rm.yaml (its own lr and batch); the PRM's
   step AUC on a generated held-out step set in which wrong steps occur
   equally at every position, each solution up to its first wrong step
   (rl/prm_toy.py, labelling "first_error"), against a position-only model
   fitted on the same PRM training data (and, for scale, one fitted on the
   held-out steps themselves);
4. GRPO+OS scored by the ORM and GRPO+PS scored by the PRM from the same SFT
   policy with equal budgets (steps, questions, samples, lr);
5. one round of iterative RL: GRPO+OS with the ORM for half the steps, the
   ORM trained further on the policy's graded samples with 10% replay, the
   reference reset to the policy, the other half;
6. a table (held-out accuracy of each policy with its standard error, the
   RMs' held-out AUC, and a reward-hacking check: the RM's score against the
   grader's verdict on the final policy's samples), the OS - PS difference
   with its paired standard error, and a PNG of held-out accuracy against
   steps.  The last two lines are ``prm step auc=... position_baseline=...``
   and ``heldout accuracy sft=... grpo_os_orm=... grpo_ps_prm=... iterative=...``.

Every option of training/arguments.py and rl/config.py is accepted and
passes to the RL runs (grpo_demo's defaults apply).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))

import grpo_demo  # noqa: E402
import torch  # noqa: E402

from megatron_dsm.checkpoint import read_latest  # noqa: E402
from megatron_dsm.data.tokenizer import build_tokenizer  # noqa: E402
from megatron_dsm.io import read_jsonl, write_json, write_jsonl  # noqa: E402
from megatron_dsm.models.generation import SamplingParams  # noqa: E402
from megatron_dsm.rl import prm_toy, reward_metrics  # noqa: E402
from megatron_dsm.rl.arith_task import PROMPT_TEMPLATE  # noqa: E402
from megatron_dsm.rl.config import RLConfig  # noqa: E402
from megatron_dsm.rl.iterative import IterativeRLStage, read_replay_data, rm_train_config  # noqa: E402
from megatron_dsm.rl.loop import RLStage  # noqa: E402
from megatron_dsm.rl.reward_models import RMConfig, train_reward_model  # noqa: E402
from megatron_dsm.rl.rewards import RuleReward  # noqa: E402
from megatron_dsm.rl.rm_serving import RewardModel  # noqa: E402
from megatron_dsm.rl.run import build_rewards  # noqa: E402
from megatron_dsm.rl.toy import items_from_problems, toy_items  # noqa: E402
from megatron_dsm.training.arguments import parse_args  # noqa: E402
from megatron_dsm.training.loop import Trainer  # noqa: E402

RM_RECIPE = REPO / "examples" / "configs" / "toy_rm.yaml"
SEP = prm_toy.STEP_SEPARATOR
# RL against a learned RM, on top of grpo_demo's defaults (its lr 2e-4 and
# beta 0 suit the exact grader): a 2-layer RM at AUC ~0.8 is gamed within 20
# steps by a free policy (held-out accuracy 0.30 -> 0.09, the samples turned to
# well-formed nonsense), so a tight KL to the SFT policy, a lower lr and a soft
# overlong penalty keep the policy where the RM's judgement holds.
LEARNED_RM_RL = ["--beta", "1.0", "--lr", "1e-4", "--overlong-buffer", "8"]


def own_args(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--rm-questions", type=int, default=400, help="training questions sampled for RM data")
    p.add_argument("--rm-valid-questions", type=int, default=100, help="dev questions sampled for the ORM's AUC")
    p.add_argument("--rm-solutions", type=int, default=4, help="sampled solutions per question")
    p.add_argument("--rm-shepherd-samples", type=int, default=4, help="completions per step prefix")
    p.add_argument("--rm-steps", type=int, default=None, help="RM training steps (default: the recipe's)")
    p.add_argument("--step-set-size", type=int, default=300, help="held-out step-set solutions")
    p.add_argument("--rl-steps", type=int, default=60, help="steps of each RL run")
    p.add_argument("--rl-eval-every", type=int, default=20)
    p.add_argument("--iterative-rm-steps", type=int, default=30, help="RM steps of the iterative refresh")
    p.add_argument("--hack-samples", type=int, default=2, help="samples per held-out question (T=1) for "
                   "the reward-hacking check")
    return p.parse_known_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sft_demo, rest = grpo_demo.demo_args(argv)
    demo, rest = own_args(rest)
    base = grpo_demo.DEFAULTS + LEARNED_RM_RL + ["--train-iters", str(demo.rl_steps),
                                                 "--rl-eval-interval", str(demo.rl_eval_every)]
    train, model_cfg, rl = parse_args(base + rest, extra=RLConfig)
    work = Path(sft_demo.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(rl.tokenizer_type, rl.tokenizer_model)
    train_p, held_p = toy_items(rl)
    dev_p, train_p = train_p[:200], train_p[200:]
    rule = RuleReward(rl.reward_correct, rl.reward_wrong, rl.format_penalty)
    t0 = time.perf_counter()
    if read_latest(work / "sft") is None:
        grpo_demo.sft(sft_demo, train, model_cfg, rl, tok, rule, train_p, items_from_problems(dev_p), work)
    say(f"> 1. SFT policy in {work / 'sft'} ({time.perf_counter() - t0:.0f}s)")

    data = rm_data(demo, work, train_p, dev_p, rl)
    say(f"> 2. RM data from the SFT policy's samples ({time.perf_counter() - t0:.0f}s)")
    rms = train_rms(demo, work, model_cfg, tok, data, held_p)
    say(f"> 3. ORM and PRM trained ({time.perf_counter() - t0:.0f}s): ORM held-out AUC {rms['orm_auc']:.3f}, "
        f"PRM step AUC {rms['prm_auc']:.3f} (position only {rms['position_auc']:.3f}; fitted on the "
        f"held-out steps themselves {rms['position_auc_fit_on_heldout']:.3f})")
    say("  PRM step AUC within each step position (a position-only scorer: 0.5): " + ", ".join(
        f"step {int(k) + 1} {a:.3f} ({n} steps, {w} wrong)" for k, (a, n, w) in rms["prm_auc_by_position"].items()))

    held = items_from_problems(held_p)
    runs = {}
    for tag, flags in (("grpo_os_orm", ["--reward", "orm", "--reward-model", str(work / "orm")]),
                       ("grpo_ps_prm", ["--reward", "prm", "--supervision", "process",
                                        "--reward-model", str(work / "prm")]),
                       ("iterative", ["--reward", "orm", "--reward-model", str(work / "orm"),
                                      "--rl-iteration-steps", str(demo.rl_steps // 2),
                                      "--rm-update-iters", str(demo.iterative_rm_steps),
                                      "--rm-recipe", str(RM_RECIPE), "--rm-refresh-questions", "64",
                                      "--rm-replay-data", str(data["orm_train"])])):
        runs[tag] = rl_run(tag, base + rest + flags, work, tok, train_p, held, demo)
        say(f"> {tag}: held-out accuracy {runs[tag]['curve']['heldout'][0]:.3f} -> "
            f"{runs[tag]['curve']['heldout'][-1]:.3f} ({time.perf_counter() - t0:.0f}s)")
    report(runs, rms, work, time.perf_counter() - t0)
    return 0


def say(msg: str) -> None:
    print(msg, flush=True)


# -- 2. reward-model data -----------------------------------------------------------
def rm_data(demo, work: Path, train_p, dev_p, rl) -> dict:
    """tools/build_prm_data.py over the SFT checkpoint: ORM and PRM records for
    RM-training questions and (ORM only) dev questions for the held-out AUC."""
    qs = [{"question": p.question, "answer": p.answer} for p in train_p[:demo.rm_questions] + dev_p[:demo.rm_valid_questions]]
    write_jsonl(work / "rm_questions.jsonl", qs)
    out = {k: work / f"{k}.jsonl" for k in ("orm_all", "prm_all", "orm_train", "orm_valid", "prm_train")}
    if not out["orm_train"].is_file():
        cmd = [sys.executable, str(REPO / "tools" / "build_prm_data.py"), "--policy-load", str(work / "sft"),
               "--questions", str(work / "rm_questions.jsonl"), "--tokenizer-type", rl.tokenizer_type,
               "--prompt-template", PROMPT_TEMPLATE, "--solutions-per-question", str(demo.rm_solutions),
               "--samples", str(demo.rm_shepherd_samples), "--step-separator", SEP,
               "--temperature", str(rl.temperature), "--max-new-tokens", str(rl.max_new_tokens),
               "--output", str(out["prm_all"]), "--orm-output", str(out["orm_all"]), "--seed", "11"]
        if rl.tokenizer_model:
            cmd += ["--tokenizer-model", rl.tokenizer_model]
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"error: build_prm_data.py failed: {p.stderr.strip().splitlines()[-1:]}")
        say(p.stdout.strip())
        dev_q = {p.question for p in dev_p}
        orm = [r for _, r in read_jsonl(out["orm_all"])]
        prm = [r for _, r in read_jsonl(out["prm_all"])]
        write_jsonl(out["orm_valid"], [r for r in orm if r["question"] in dev_q])
        write_jsonl(out["prm_train"], [r for r in prm if r["question"] not in dev_q])
        write_jsonl(out["orm_train"], [r for r in orm if r["question"] not in dev_q])
    return out


# -- 3. reward models -------------------------------------------------------------------
def train_rms(demo, work: Path, model_cfg, tok, data: dict, held_p) -> dict:
    """ORM and PRM with the toy RM recipe, from the SFT checkpoint's backbone;
    the PRM evaluated on the generated held-out step set."""
    step_set = prm_toy.step_set(held_p[:demo.step_set_size], seed=17, labelling="first_error")
    write_jsonl(work / "step_set.jsonl", step_set)
    recipe_train, _, _ = parse_args(["--config", str(RM_RECIPE)], extra=RMConfig)
    res = {}
    for kind, name, train_file, valid_file in (("outcome", "orm", data["orm_train"], data["orm_valid"]),
                                               ("process", "prm", data["prm_train"], work / "step_set.jsonl")):
        if read_latest(work / name) is None:
            t = dataclasses.replace(recipe_train, load=str(work / "sft"), save=str(work / name),
                                    train_iters=demo.rm_steps or recipe_train.train_iters,
                                    eval_interval=demo.rm_steps or recipe_train.train_iters)
            cfg = RMConfig(rm_type=kind, train_data=[str(train_file)], valid_data=[str(valid_file)],
                           step_separator=SEP, tokenizer_type="byte")
            # the RM reads "User: {question}\n\nAssistant: {solution}", longer than the policy's prompt
            rm_model = dataclasses.replace(model_cfg, seq_length=model_cfg.seq_length + 96)
            out = train_reward_model(t, rm_model, cfg, tokenizer=tok)
            write_json(work / f"{name}_metrics.json", out)
        res[name] = json.loads((work / f"{name}_metrics.json").read_text())
    res["orm_auc"] = res["orm"]["valid auc"]
    rm = RewardModel.from_checkpoint(str(work / "prm"), tok)
    probs = torch.cat(rm.score_steps([(r["question"], SEP.join(r["steps"])) for r in step_set])).tolist()
    labels = prm_toy.step_labels(step_set)
    train_recs = [r for _, r in read_jsonl(data["prm_train"])]
    res["prm_auc"] = reward_metrics.auc(probs, labels)
    res["prm_auc_by_position"] = {str(k): v for k, v in prm_toy.auc_by_position(probs, step_set).items()}
    res["position_auc"] = reward_metrics.auc(
        prm_toy.position_scores(prm_toy.position_baseline(train_recs), step_set), labels)
    # the best any position-only scorer can do here: fitted on the step set itself
    res["position_auc_fit_on_heldout"] = reward_metrics.auc(
        prm_toy.position_scores(prm_toy.position_baseline(step_set), step_set), labels)
    return res


# -- 4-5. RL runs ------------------------------------------------------------------------
def rl_run(tag: str, argv: list[str], work: Path, tok, train_p, held, demo) -> dict:
    train, model_cfg, rl = parse_args(argv, extra=RLConfig)
    outcome, step, served = build_rewards(rl, tok, model_cfg.vocab_size)
    items = items_from_problems(train_p)
    if rl.rm_update_iters:
        stage = IterativeRLStage(rl, tok, items, held, reward=outcome, step_reward=step, served=served,
                                 rm_train=rm_train_config(rl, train),
                                 replay=read_replay_data(rl, served.kind, served.separator))
    else:
        stage = RLStage(rl, tok, items, held, reward=outcome, step_reward=step)
    cfg = dataclasses.replace(train, load=str(work / "sft"), finetune=True, save=None,
                              global_batch_size=rl.prompts_per_step * rl.group_size,
                              tensorboard_dir=str(work / "tb" / tag))
    trainer = Trainer(cfg, model_cfg)
    curve = {"eval_step": [0], "heldout": [], "reward": []}

    def on_step(it, fields):
        curve["reward"].append(fields["reward mean"])
        if "heldout accuracy" in fields:
            curve["eval_step"].append(it)
            curve["heldout"].append(fields["heldout accuracy"])

    last = trainer.fit(stage, on_step=on_step)
    curve["heldout"].insert(0, last["initial heldout accuracy"])
    out = {"curve": curve, "final": greedy_correct(stage, held), "hack": hacking_check(stage, held, served, demo),
           "refreshes": getattr(stage, "refreshes", 0)}
    trainer.close()
    (work / f"{tag}_curve.json").write_text(json.dumps(curve))
    return out


def greedy_correct(stage, items) -> list[bool]:
    """Per held-out question: the policy's greedy answer is right."""
    items = list(items)[:stage.cfg.rl_eval_size]
    params = SamplingParams(max_new_tokens=stage.cfg.max_new_tokens, stop_ids=(stage.sampler.eod,))
    out = stage.sampler.generate(items, params, weights_from=stage.trainer.model)
    texts = [stage.sampler.decode_response(c) for c in out.completions]
    _, ok = RuleReward()([it.question for it in items], texts, [it.answer for it in items])
    return [bool(x) for x in ok]


def hacking_check(stage, items, served, demo) -> dict:
    """The run's reward model against the grader on the final policy's
    samples (T=1): does a high RM score still mean a right answer?"""
    items = list(items)[:stage.cfg.rl_eval_size]
    n = demo.hack_samples
    params = SamplingParams(max_new_tokens=stage.cfg.max_new_tokens, temperature=1.0, n=n,
                            stop_ids=(stage.sampler.eod,), seed=99)
    out = stage.sampler.generate(items, params, weights_from=stage.trainer.model)
    texts = [stage.sampler.decode_response(c) for c in out.completions]
    rows = [it for it in items for _ in range(n)]
    _, ok = RuleReward()([r.question for r in rows], texts, [r.answer for r in rows])
    scores = served.score([(r.question, t) for r, t in zip(rows, texts)]).tolist()
    okl = ok.tolist()
    res = {"grader accuracy": sum(okl) / len(okl), "rm score": sum(scores) / len(scores),
           "rm score right": _mean([s for s, o in zip(scores, okl) if o]),
           "rm score wrong": _mean([s for s, o in zip(scores, okl) if not o])}
    if 0 < sum(okl) < len(okl):
        res["rm auc vs grader"] = reward_metrics.auc(scores, okl)
    return res


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


# -- 6. report ----------------------------------------------------------------------------
def report(runs: dict, rms: dict, work: Path, seconds: float) -> None:
    first = runs["grpo_os_orm"]
    sft_acc = first["curve"]["heldout"][0]
    n = len(first["final"])
    se = lambda p: math.sqrt(max(p * (1 - p), 0.0) / n)  # noqa: E731
    rm_auc = {"grpo_os_orm": f"ORM {rms['orm_auc']:.3f}", "grpo_ps_prm": f"PRM {rms['prm_auc']:.3f} (steps)",
              "iterative": f"ORM {rms['orm_auc']:.3f} (then refreshed)"}
    say(f"\n{'policy':<13} {'held-out acc':>14}  {'RM held-out AUC':<26} reward-hacking check on the final "
        f"policy's samples (T=1)")
    say(f"{'sft':<13} {sft_acc:>7.3f} ±{se(sft_acc):.3f}  {'-':<26} -")
    for tag, r in runs.items():
        acc = sum(r["final"]) / n
        h = r["hack"]
        auc = f"{h['rm auc vs grader']:.3f}" if "rm auc vs grader" in h else "-"
        say(f"{tag:<13} {acc:>7.3f} ±{se(acc):.3f}  {rm_auc[tag]:<26} grader acc {h['grader accuracy']:.3f}, "
            f"RM score {h['rm score']:.3f} (right {h['rm score right']:.3f}, wrong {h['rm score wrong']:.3f}), "
            f"RM AUC vs grader {auc}")
    os_c, ps_c = runs["grpo_os_orm"]["final"], runs["grpo_ps_prm"]["final"]
    d = [float(a) - float(b) for a, b in zip(os_c, ps_c)]
    mean_d = sum(d) / n
    se_d = math.sqrt(sum((x - mean_d) ** 2 for x in d) / max(n - 1, 1) / n)
    order = "GRPO+OS (ORM) > GRPO+PS (PRM)" if mean_d > 0 else (
        "GRPO+PS (PRM) > GRPO+OS (ORM)" if mean_d < 0 else "GRPO+OS (ORM) = GRPO+PS (PRM)")
    say(f"OS - PS: {mean_d:+.3f} ± {se_d:.3f} (paired standard error over {n} held-out questions): {order}, "
        f"{abs(mean_d) / se_d if se_d else float('inf'):.1f} standard errors")
    plot = work / "heldout_accuracy.png"
    write_plot(runs, sft_acc, plot)
    write_json(work / "summary.json", {"sft": sft_acc, "rms": rms, "seconds": seconds,
                                       **{t: {"final": sum(r["final"]) / n, "hack": r["hack"],
                                              "curve": r["curve"]} for t, r in runs.items()}})
    say(f"> wrote {plot}; total {seconds:.0f}s")
    say(f"prm step auc={rms['prm_auc']:.2f} position_baseline={rms['position_auc']:.2f}")
    finals = {t: sum(r["final"]) / n for t, r in runs.items()}
    say(f"heldout accuracy sft={sft_acc:.3f} grpo_os_orm={finals['grpo_os_orm']:.3f} "
        f"grpo_ps_prm={finals['grpo_ps_prm']:.3f} iterative={finals['iterative']:.3f}")


def write_plot(runs: dict, sft_acc: float, path: Path) -> None:
    import matplotlib  # optional dependency: only this plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for tag, r in runs.items():
        ax.plot(r["curve"]["eval_step"], r["curve"]["heldout"], "o-", label=tag)
    ax.axhline(sft_acc, color="gray", ls="--", label="SFT policy")
    ax.set(xlabel="RL step", ylabel="held-out accuracy (greedy)", ylim=(-0.05, 1.05),
           title="GRPO scored by learned reward models (toy arithmetic)")
    ax.legend(loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
