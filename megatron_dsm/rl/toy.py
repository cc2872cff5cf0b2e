"""The toy RL setting end to end: data, a tiny policy SFT'd by the project's
own Trainer, and the pieces ``RLLoop`` needs.

Why a separate module: the demo, the ablation and the tests all need "an
SFT policy that is moderately good at the arithmetic task"; this builds it
the same way everywhere.  SFT here is plain response-only next-token loss on
worked solutions (``prompt + " " + solution + <eod>``), run through
``Trainer.train_step`` and megatron-core's GPTModel LM loss, for a fixed
number of steps or until greedy accuracy on a *dev* split (drawn from the
training problems, never the held-out split) reaches a target.

Mixed demonstrations.  Like real SFT sets, which mix worked solutions with
bare final answers, a share ``direct_share`` of the SFT targets is only
"The answer is N." without the steps.  The SFT policy then answers
directly about that often, which a tiny model gets wrong far more often
than when it writes the equations out (two operations on operands up to 9:
8% of the bare greedy answers right against 57% of the worked ones, for
the demo's SFT policy); the rule reward lets RL
discover that writing the steps pays (the paper's observation that RL makes
the right output more likely at the top, Maj@K -> Top1).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.rl.arith_task import Problem, generate_problems
from megatron_dsm.rl.loop import Item
from megatron_dsm.training.loop import lm_loss_func


def items_from_problems(problems: Sequence[Problem]) -> list[Item]:
    return [Item(p.prompt, p.question, str(p.answer)) for p in problems]


def toy_items(cfg) -> tuple[list[Problem], list[Problem]]:
    """Train / held-out problems of the arithmetic task from an RLConfig."""
    return generate_problems(cfg.task_train_size, cfg.task_heldout_size, seed=cfg.task_seed,
                             max_value=cfg.task_max_value, two_step_prob=cfg.task_two_step_prob)


def sft_rows(problems: Sequence[Problem], tokenizer, direct_share: float = 0.0,
             seed: int = 0) -> list[tuple[list[int], int]]:
    """(prompt + completion + eod ids, prompt length) per problem; a share
    ``direct_share`` of them (seeded) answers without the worked steps."""
    if not 0.0 <= direct_share <= 1.0:
        raise ValueError(f"direct_share must be in [0, 1], got {direct_share}")
    rng = random.Random(seed)
    out = []
    for p in problems:
        prompt = tokenizer.encode(p.prompt)
        text = p.direct_completion if rng.random() < direct_share else p.completion
        out.append((prompt + tokenizer.encode(text) + [int(tokenizer.eod)], len(prompt)))
    return out


def sft_batch(rows: Sequence[tuple[list[int], int]], pad_id: int) -> dict:
    """Right-padded LM batch with the loss on response tokens only."""
    s = max(len(ids) for ids, _ in rows)
    b = len(rows)
    tokens = torch.full((b, s), pad_id, dtype=torch.long)
    labels = torch.full((b, s), pad_id, dtype=torch.long)
    loss_mask = torch.zeros(b, s)
    for i, (ids, plen) in enumerate(rows):
        t = torch.tensor(ids, dtype=torch.long)
        tokens[i, :len(ids)] = t
        labels[i, :len(ids) - 1] = t[1:]
        loss_mask[i, plen - 1:len(ids) - 1] = 1.0
    return {"tokens": tokens, "labels": labels, "loss_mask": loss_mask,
            "position_ids": torch.arange(s)[None].expand(b, -1).contiguous()}


def sft_forward_step(data_iterator, model):
    batch = next(data_iterator)
    dev = platform.device()
    out = model(batch["tokens"].to(dev), batch["position_ids"].to(dev), None,
                labels=batch["labels"].to(dev))
    return out, functools.partial(lm_loss_func, batch["loss_mask"].to(dev))


@dataclasses.dataclass
class SFTResult:
    steps: int
    dev_accuracy: float
    history: list[tuple[int, float]]


def sft_until(trainer, loop, problems: Sequence[Problem], dev: Sequence[Item], *, max_steps: int,
              target: float | None, eval_every: int, seed: int = 0,
              direct_share: float = 0.0) -> SFTResult:
    """SFT ``trainer``'s policy for ``max_steps`` steps, or until greedy dev
    accuracy (measured by ``loop.evaluate`` every ``eval_every`` steps)
    reaches ``target`` (None: no early stop)."""
    rows = sft_rows(problems, loop.tok, direct_share, seed)
    rng = random.Random(seed)
    mbs, gbs = trainer.train_cfg.micro_batch_size, trainer.train_cfg.global_batch_size
    history: list[tuple[int, float]] = []
    acc = 0.0
    step = 0
    while step < max_steps:
        chosen = [rows[rng.randrange(len(rows))] for _ in range(gbs)]
        mbatches = [sft_batch(chosen[i:i + mbs], loop.pad_id) for i in range(0, gbs, mbs)]
        s = max(m["tokens"].size(1) for m in mbatches)
        res = trainer.train_step(sft_forward_step, mbatches, seq_length=s, micro_batch_size=mbs,
                                 num_microbatches=len(mbatches))
        step += 1
        if step % eval_every == 0 or step == max_steps:
            acc = loop.evaluate(dev)
            history.append((step, acc))
            trainer.writer.text(f" sft step {step} | lm loss: {res.metrics['lm loss']:.4f} | "
                                f"dev accuracy: {acc:.3f}")
            if target is not None and acc >= target:
                break
    return SFTResult(step, acc, history)
