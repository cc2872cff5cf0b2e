"""The toy RL setting end to end: data, a tiny policy SFT'd by the project's
own Trainer, and the pieces ``RLStage`` needs.

Why a separate module: the demo, the ablation and the tests all need "an
SFT policy that is moderately good at the arithmetic task"; this builds it
the same way everywhere.  SFT here is plain response-only next-token loss on
worked solutions (``prompt + " " + solution + <eod>``), run by
``ToySFTStage`` on ``Trainer.fit`` with megatron-core's GPTModel LM loss,
for a fixed number of steps or until greedy accuracy on a *dev* split
(drawn from the training problems, never the held-out split) reaches a
target.

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

import functools
import random
from typing import Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.rl.arith_task import Problem, generate_problems
from megatron_dsm.rl.rollout import Item
from megatron_dsm.rl.sampler import PolicySampler, engine_options
from megatron_dsm.training.pretrain import lm_loss_func
from megatron_dsm.training.stage import Stage, StepResult


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


class ToySFTStage(Stage):
    """Response-only SFT on the task's demonstrations (random draws of
    ``sft_rows``, seeded); its evaluation is greedy accuracy on ``dev``
    every ``eval_every`` steps, and it stops early once that reaches
    ``target`` (None: never).  ``rl_cfg`` gives the sampling settings of the
    evaluation (engine, response length, ``rl_eval_size``)."""

    eval_title = "dev evaluation"
    eval_prefix = ""

    def __init__(self, problems: Sequence[Problem], dev: Sequence[Item], tokenizer, reward, rl_cfg, *,
                 eval_every: int, target: float | None = None, seed: int = 0,
                 direct_share: float = 0.0):
        self.rows = sft_rows(problems, tokenizer, direct_share, seed)
        self.rng = random.Random(seed)
        self.dev, self.tok, self.reward, self.rl_cfg = list(dev), tokenizer, reward, rl_cfg
        self.eval_every, self.target = eval_every, target
        self.history: list[tuple[int, float]] = []
        self.sampler: PolicySampler | None = None

    def setup(self, trainer) -> None:
        self.sampler = PolicySampler(self.rl_cfg.rollout_engine, trainer.model, self.tok,
                                     vocab_size=trainer.model_cfg.vocab_size,
                                     model_cfg=trainer.model_cfg,
                                     **engine_options(self.rl_cfg, trainer.train_cfg.seed))

    def step(self, trainer) -> StepResult:
        mbs, gbs = trainer.train_cfg.micro_batch_size, trainer.train_cfg.global_batch_size
        chosen = [self.rows[self.rng.randrange(len(self.rows))] for _ in range(gbs)]
        mbatches = [sft_batch(chosen[i:i + mbs], self.sampler.pad_id) for i in range(0, gbs, mbs)]
        s = max(m["tokens"].size(1) for m in mbatches)
        return trainer.train_step(sft_forward_step, mbatches, seq_length=s, micro_batch_size=mbs,
                                  num_microbatches=len(mbatches))

    def eval_interval(self, trainer) -> int:
        return self.eval_every

    def evaluate(self, trainer) -> dict:
        cfg = self.rl_cfg
        acc = self.sampler.accuracy(self.dev[:cfg.rl_eval_size], self.reward, max_new_tokens=cfg.max_new_tokens,
                                    weights_from=trainer.model, top_p=cfg.top_p)
        self.history.append((trainer.iteration, acc))
        return {"dev accuracy": acc}

    def finished(self, trainer) -> bool:
        return self.target is not None and bool(self.history) and self.history[-1][1] >= self.target
