"""GRPO scored by learned reward models through the command's own path
(``rl.run.build_stage`` -> ``Trainer`` -> ``fit``), at the layout torchrun
gives (``--tp 2``: TP=2; default DP=2):

1. an outcome RM (graded arithmetic solutions) and a process RM (the
   generated step set, separator ". ") trained at this layout by the RM
   stage (``rl.reward_models.train_reward_model``);
2. ``os``: GRPO+OS with ``--reward orm``; ``ps``: GRPO+PS with
   ``--reward prm``; ``iter``: iterative RL (``--rm-update-iters``) with the
   RM of ``--iterative-kind``: one RL iteration of 2 steps, the RM refreshed
   on the policy's samples with replay, the reference reset, 2 more steps;
3. each scenario runs uninterrupted with checkpoints, then resumes from a
   checkpoint taken between steps (``iter``: at the iteration boundary,
   before the refresh, and after it) and runs to the same end.

Writes per rank whether the resumed runs end with the very same policy,
reference and reward-model weights, and the log lines (rank 0), to OUT.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.data.tokenizer import build_tokenizer  # noqa: E402
from megatron_dsm.io import write_jsonl  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.gpt import unwrap  # noqa: E402
from megatron_dsm.rl import prm_toy  # noqa: E402
from megatron_dsm.rl.arith_task import generate_problems  # noqa: E402
from megatron_dsm.rl.config import RLConfig  # noqa: E402
from megatron_dsm.rl.reward_models import RMConfig, train_reward_model  # noqa: E402
from megatron_dsm.rl.run import build_stage  # noqa: E402
from megatron_dsm.training.arguments import TrainConfig, parse_args  # noqa: E402
from megatron_dsm.training.logging import parse_line  # noqa: E402
from megatron_dsm.training.loop import Trainer  # noqa: E402

MODEL = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
         "--ffn-hidden-size", "128", "--seq-length", "160", "--vocab-size", "259"]
BASE = MODEL + ["--lr", "1e-3", "--lr-decay-style", "constant", "--weight-decay", "0.0",
                "--micro-batch-size", "4", "--global-batch-size", "16", "--log-interval", "1",
                "--prompts-per-step", "4", "--group-size", "4", "--max-new-tokens", "12",
                "--task-train-size", "40", "--task-heldout-size", "4", "--rl-eval-size", "4",
                "--task-max-value", "9", "--task-two-step-prob", "1.0", "--beta", "0.04",
                "--rl-eval-interval", "100", "--seed", "3"]


def rm_data(work: Path, rank: int) -> tuple[str, str]:
    """ORM records (solutions right or with a wrong final answer, graded)
    and PRM records (the generated step set), written by rank 0."""
    probs, _ = generate_problems(64, 4, seed=5, max_value=9, two_step_prob=1.0)
    rng = random.Random(1)
    orm = [{"question": p.question, "answer": str(p.answer),
            "solution": p.solution if k % 2 else p.solution.replace(f"is {p.answer}.", f"is {p.answer + 1}.")}
           for k, p in enumerate(probs)]
    rng.shuffle(orm)
    prm = prm_toy.step_set(probs, seed=2, labelling="propagated")
    d = work / "data"
    if rank == 0:
        d.mkdir(parents=True, exist_ok=True)
        write_jsonl(d / "orm.jsonl", orm)
        write_jsonl(d / "prm.jsonl", prm)
    torch.distributed.barrier()
    return str(d / "orm.jsonl"), str(d / "prm.jsonl")


def train_rms(work: Path, tp: int, orm: str, prm: str) -> None:
    tok = build_tokenizer("byte")
    for kind, data, out in (("outcome", orm, "orm"), ("process", prm, "prm")):
        t = TrainConfig(train_iters=4, micro_batch_size=4, global_batch_size=8, lr=1e-3,
                        lr_decay_style="constant", log_interval=4, seed=7, weight_decay=0.0,
                        tensor_model_parallel_size=tp, save=str(work / out))
        m = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                        vocab_size=259, seq_length=160)
        cfg = RMConfig(rm_type=kind, train_data=[data], step_separator=prm_toy.STEP_SEPARATOR,
                       tokenizer_type="byte")
        train_reward_model(t, m, cfg, tokenizer=tok)


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in unwrap(module).parameters()])


def run_rl(argv: list[str]) -> tuple[Trainer, object, list[dict], str]:
    """tools/grpo.py's run (rl.run.run) keeping the trainer and the stage."""
    train, model_cfg, rl = parse_args(argv, extra=RLConfig)
    tok = build_tokenizer(rl.tokenizer_type, rl.tokenizer_model)
    stage = build_stage(train, model_cfg, rl, tok)
    trainer = Trainer(train, model_cfg)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        trainer.fit(stage)
    trainer.close()
    text = buf.getvalue()
    return trainer, stage, [x for x in map(parse_line, text.splitlines()) if x], text


def state(trainer, stage) -> dict[str, torch.Tensor]:
    out = {"policy": flat(trainer.model)}
    if stage.reference is not None:
        out["reference"] = flat(stage.reference.model)
    rm_trainer = getattr(stage, "rm_trainer", None)
    if rm_trainer is not None:
        out["reward model"] = flat(rm_trainer.model)
        sd = rm_trainer.optimizer.state_dict()
        states = sd.get("optimizer", sd)["state"].values()
        out["rm optimizer"] = torch.cat([v.reshape(-1).float().cpu() for st in states
                                         for v in st.values() if torch.is_tensor(v) and v.dim() > 0])
    return out


def scenario(name: str, argv: list[str], work: Path, resume_from: list[int], iters: int,
             save_interval: int) -> dict:
    save = work / name
    full = argv + ["--train-iters", str(iters), "--save", str(save), "--save-interval", str(save_interval)]
    trainer, stage, lines, text = run_rl(full)
    want = state(trainer, stage)
    res = {"lines": lines, "text": text[-6000:], "rl_iteration": stage.rl_iteration,
           "resets": stage.reference.resets if stage.reference is not None else None,
           "refreshes": getattr(stage, "refreshes", None),
           "rm_iteration": stage.rm_trainer.iteration if hasattr(stage, "rm_trainer") else None,
           "history": len(getattr(stage, "history", [])), "resumes": {}}
    if hasattr(stage, "rm_trainer"):
        res["rm_moved"] = bool(not torch.equal(want["reward model"], initial_rm(stage)))
    for it in resume_from:
        t2, s2, lines2, _ = run_rl(argv + ["--train-iters", str(iters), "--load", str(save / f"iter_{it:07d}")])
        got = state(t2, s2)
        res["resumes"][str(it)] = {
            "equal": {k: bool(torch.equal(got[k], want[k])) for k in want},
            "lines": lines2, "refreshes": getattr(s2, "refreshes", None),
            "rm_iteration": s2.rm_trainer.iteration if hasattr(s2, "rm_trainer") else None}
    return res


def initial_rm(stage) -> torch.Tensor:
    from megatron_dsm.models.value_head import build_value_model, load_weights

    t = stage.rm_trainer
    m = build_value_model(stage.rm_model_cfg, t.tconfig)
    load_weights(m, stage.served.load)
    return flat(m)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--iterative-kind", choices=("outcome", "process"), default="outcome")
    ap.add_argument("--scenarios", default="os,ps,iter")
    a = ap.parse_args()
    work = Path(a.work)
    rank = int(os.environ.get("RANK", "0"))
    platform.initialize_distributed(a.tp, 1)
    orm, prm = rm_data(work, rank)
    train_rms(work, a.tp, orm, prm)
    layout = ["--tensor-model-parallel-size", str(a.tp)]
    out = {}
    todo = a.scenarios.split(",")
    if "os" in todo:
        out["os"] = scenario("os", BASE + layout + ["--reward", "orm", "--reward-model", str(work / "orm")],
                             work, [2], 3, 1)
    if "ps" in todo:
        out["ps"] = scenario("ps", BASE + layout + ["--reward", "prm", "--supervision", "process",
                                                    "--reward-model", str(work / "prm")], work, [2], 3, 1)
    if "iter" in todo:
        recipe = work / "rm_recipe.yaml"
        if rank == 0:
            recipe.write_text("train:\n  lr: 5.0e-4\n  lr_decay_style: constant\n  micro_batch_size: 4\n"
                              "  global_batch_size: 8\n  weight_decay: 0.0\n  seed: 9\n")
        torch.distributed.barrier()
        rm, data = ("orm", orm) if a.iterative_kind == "outcome" else ("prm", prm)
        extra = ["--reward", rm, "--reward-model", str(work / rm), "--rl-iteration-steps", "2",
                 "--rm-update-iters", "2", "--rm-recipe", str(recipe), "--rm-refresh-questions", "2",
                 "--rm-shepherd-samples", "2", "--rm-replay-data", data]
        if rm == "prm":
            extra += ["--supervision", "process"]
        out["iter"] = scenario("iter", BASE + layout + extra, work, [2, 3], 4, 1)
    parts = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, {k: {"resumes": {i: r["equal"] for i, r in v["resumes"].items()}}
                                                for k, v in out.items()})
    if rank == 0:
        out["ranks"] = parts
        Path(a.out).write_text(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
