"""Learning-rate schedules.

The paper's base-model schedule is *multi-step*: linear warmup to the peak,
then the peak until 80% of training, 31.6% of the peak until 90%, and 10% of
the peak after that.  megatron-core's OptimizerParamScheduler has no
multi-step style, so the schedules live here as one small class with a
``state_dict`` for exact resume.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, peak: float, style: str, warmup: int, total: int,
          min_lr: float = 0.0, milestones=(0.8, 0.9), factors=(0.316, 0.1)) -> float:
    """LR for optimizer step ``step`` (0-based: the step about to be taken)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if style == "constant":
        return peak
    if style == "multistep":
        frac = step / max(total, 1)
        lr = peak
        for m, f in zip(milestones, factors):
            if frac >= m:
                lr = peak * f
        return lr
    decay_steps = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / decay_steps, 1.0)
    if style == "cosine":
        return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * progress))
    if style == "linear":
        return peak - (peak - min_lr) * progress
    raise ValueError(f"unknown LR schedule {style!r}")


class LRScheduler:
    """Sets ``lr`` on every param group of a (megatron) optimizer each step."""

    def __init__(self, optimizer, *, peak: float, style: str, warmup: int, total: int,
                 min_lr: float = 0.0, milestones=(0.8, 0.9), factors=(0.316, 0.1)):
        self.optimizer = optimizer
        self.kw = dict(peak=peak, style=style, warmup=warmup, total=total, min_lr=min_lr,
                       milestones=tuple(milestones), factors=tuple(factors))
        self.num_steps = 0
        self._apply()

    def current_lr(self) -> float:
        return lr_at(self.num_steps, **self.kw)

    def _apply(self) -> None:
        lr = self.current_lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.num_steps += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"num_steps": self.num_steps, **self.kw}

    def load_state_dict(self, sd: dict) -> None:
        self.num_steps = int(sd["num_steps"])
        self._apply()
