"""Iterative RL (the paper's Algorithm 1, lines 9-11): after each RL
iteration, sample from the current policy, label the samples with the
grader to make new reward-model training data, continue training the
reward model on it with a replay of 10% historical data, then (in
``RLStage.end_rl_iteration``) set pi_ref <- pi_theta.

``IterativeRMRefresh`` is an ``RLStage`` hook.  It trains the reward model
with ``rl.reward_models.train_reward_model`` (the project's RM stage on
``Trainer.fit``), continuing from the current RM checkpoint, and hands the
new checkpoint to ``on_new_model`` (which reloads the in-process reward).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from megatron_dsm.eval.grading import grade
from megatron_dsm.io import write_jsonl
from megatron_dsm.rl.reward_models import train_reward_model


def records_from_samples(questions: Sequence[str], solutions: Sequence[str],
                         answers: Sequence[str], *, grader: str = "dsm") -> list[dict]:
    """Outcome-RM records {question, solution, label}, label = grade(solution, answer)."""
    if not len(questions) == len(solutions) == len(answers):
        raise ValueError("questions, solutions and answers must have the same length")
    return [{"question": q, "solution": s, "label": float(grade(s, str(a), grader=grader))}
            for q, s, a in zip(questions, solutions, answers) if s.strip()]


def with_replay(new: Sequence[dict], history: Sequence[dict], replay: float,
                rng: random.Random) -> list[dict]:
    """``new`` plus old records drawn from ``history`` so that they make up
    ``replay`` of the mix: n_old = round(replay / (1 - replay) * len(new))
    (capped by the history's size)."""
    if not 0.0 <= replay < 1.0:
        raise ValueError(f"replay share must be in [0, 1), got {replay}")
    n_old = min(len(history), round(replay / (1.0 - replay) * len(new)))
    mix = list(new) + rng.sample(list(history), n_old)
    rng.shuffle(mix)
    return mix


@dataclasses.dataclass
class IterativeRMRefresh:
    rm_train: object                 # TrainConfig of the RM run (train_iters = steps per refresh)
    rm_model: object                 # ModelConfig of the RM
    rm_cfg: object                   # rl.reward_models.RMConfig
    work_dir: str
    current: str                     # RM checkpoint to continue from
    questions_per_refresh: int = 64
    replay: float = 0.1
    on_new_model: Callable[[str], None] | None = None
    seed: int = 0

    def __post_init__(self):
        self.history: list[dict] = []
        self.rng = random.Random(self.seed)

    def sample(self, loop) -> list[dict]:
        idx = [self.rng.randrange(len(loop.train_items)) for _ in range(self.questions_per_refresh)]
        items = [loop.train_items[i] for i in idx]
        out = loop.sample(items, seed=self.rng.randrange(1 << 30))
        rows = [it for it in items for _ in range(loop.cfg.group_size)]
        texts = [loop.sampler.decode_response(c) for c in out.completions]
        return records_from_samples([r.question for r in rows], texts, [r.answer for r in rows])

    def __call__(self, loop) -> None:
        new = self.sample(loop)
        mix = with_replay(new, self.history, self.replay, self.rng)
        self.history.extend(new)
        work = Path(self.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        k = loop.rl_iteration
        data = work / f"rm_data_iter{k}.jsonl"
        if loop.trainer.rank == 0:
            write_jsonl(data, mix)
        torch.distributed.barrier()
        save = str(work / f"rm_iter{k}")
        train = dataclasses.replace(self.rm_train, load=self.current, finetune=True, save=save,
                                    tensorboard_dir=None, log_json=None)
        cfg = dataclasses.replace(self.rm_cfg, train_data=[str(data)], valid_data=[])
        train_reward_model(train, self.rm_model, cfg, tokenizer=loop.tok)
        self.current = save
        loop.trainer.writer.text(f" iterative RL: reward model trained on {len(new)} new + "
                                 f"{len(mix) - len(new)} replayed samples -> {save}")
        if self.on_new_model is not None:
            self.on_new_model(save)
