"""Step-labelled solutions of the arithmetic task, generated: does a process
reward model judge steps, or only where they stand?

A worked solution of the task (``rl.arith_task``) is a list of steps: one
equation per operation, then "The answer is N." (steps joined by
``STEP_SEPARATOR``).  A *corrupted* solution has one wrong step, at a step
drawn uniformly (or with ``position_weights``): an equation whose result is
off by 1-3 (the arithmetic is wrong) or whose first operand is off by 1-3
(it does not go on from the question's number or the previous result), each
half the time, or a final answer off by 1-3.  The steps after the wrong one
go on from what it wrote (each is right given the text before it).  Two
labellings of the same text:

* ``local`` (the held-out judge): a step is good when it is right given the
  text before it, so exactly the wrong step is labelled 0.  With wrong steps
  drawn uniformly they occur equally often at every position, so a scorer
  that knows only the position of a step has AUC 0.5 in expectation; only a
  model that checks the step itself does better.
* ``propagated`` (what Math-Shepherd labels look like): every step from the
  wrong one on is labelled 0 (none of them can reach the answer any more),
  so later steps are more often bad and position alone predicts labels.
* ``first_error`` (the held-out judge of a Math-Shepherd PRM): the solution
  up to and including its first wrong step, labelled 1 ... 1 0; clean
  solutions whole.  The two labellings above disagree only on the steps
  after the wrong one, so those are not judged: a PRM trained on
  Math-Shepherd labels must find the first error, as in ProcessBench.
  A causal PRM's score of a step depends on the text before it alone, so
  cutting the text there changes no score of the steps that are kept.

``position_baseline`` fits P(good | position) on training records and scores
steps by it: the position-only model a PRM must beat on the local set.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from megatron_dsm.rl.arith_task import Problem
from megatron_dsm.rl.reward_metrics import auc
from megatron_dsm.rl.rm_data import split_steps

STEP_SEPARATOR = ". "
LABELLINGS = ("local", "propagated", "first_error")
_EQ = re.compile(r"^(\d+)([+\-])(\d+)=(\d+)$")
_ANSWER = re.compile(r"^The answer is (-?\d+)\.?$")


def solution_steps(problem: Problem) -> list[str]:
    """The worked solution's steps as a process RM reads them."""
    return split_steps(problem.solution, STEP_SEPARATOR)


def _off(rng: random.Random, value: int) -> int:
    while True:
        wrong = value + rng.choice((-3, -2, -1, 1, 2, 3))
        if wrong >= 0:
            return wrong


def _replay(steps: Sequence[str], value: int) -> list[str]:
    """The steps after a wrong one, going on from its ``value``: each
    equation takes the running value as its first operand, the answer
    states it."""
    out = []
    for s in steps:
        m = _EQ.match(s)
        if m:
            op, b = m.group(2), int(m.group(3))
            nxt = value + b if op == "+" else value - b
            out.append(f"{value}{op}{b}={nxt}")
            value = nxt
        else:
            out.append(f"The answer is {value}.")
    return out


def corrupt(problem: Problem, at: int, rng: random.Random, labelling: str) -> tuple[list[str], list[float]]:
    """The solution's steps with step ``at`` (0-based) wrong and the rest
    going on from it, and their labels."""
    if labelling not in LABELLINGS:
        raise ValueError(f"labelling must be one of {LABELLINGS}, got {labelling!r}")
    steps = solution_steps(problem)
    if not 0 <= at < len(steps):
        raise ValueError(f"step {at} is outside the {len(steps)} steps")
    m = _EQ.match(steps[at])
    if m and rng.random() < 0.5:            # the arithmetic is wrong
        wrong = _off(rng, int(m.group(4)))
        bad = f"{m.group(1)}{m.group(2)}{m.group(3)}={wrong}"
    elif m:                                 # the first operand is not the running value
        a, op, b = _off(rng, int(m.group(1))), m.group(2), int(m.group(3))
        wrong = a + b if op == "+" else a - b
        bad = f"{a}{op}{b}={wrong}"
    else:
        wrong = _off(rng, int(_ANSWER.match(steps[at]).group(1)))
        bad = f"The answer is {wrong}."
    if labelling == "first_error":
        return steps[:at] + [bad], [1.0] * at + [0.0]
    rest = _replay(steps[at + 1:], wrong)
    after = 1.0 if labelling == "local" else 0.0
    return steps[:at] + [bad] + rest, [1.0] * at + [0.0] + [after] * len(rest)


def step_set(problems: Sequence[Problem], *, seed: int, labelling: str,
             clean_share: float = 0.25, position_weights: Sequence[float] | None = None) -> list[dict]:
    """Process-RM records ``{question, steps, step_labels, answer, wrong_step}``:
    a share ``clean_share`` of the problems as worked (all steps 1, wrong_step
    -1), the others with one wrong step, drawn uniformly over their steps or
    with ``position_weights`` (one weight per step position: training data
    in which position alone predicts where the wrong steps are)."""
    rng = random.Random(seed)
    out = []
    for p in problems:
        steps = solution_steps(p)
        if rng.random() < clean_share:
            out.append({"question": p.question, "steps": steps, "step_labels": [1.0] * len(steps),
                        "answer": str(p.answer), "wrong_step": -1})
            continue
        at = (rng.choices(range(len(steps)), weights=list(position_weights)[:len(steps)])[0]
              if position_weights else rng.randrange(len(steps)))
        bad, labels = corrupt(p, at, rng, labelling)
        out.append({"question": p.question, "steps": bad, "step_labels": labels,
                    "answer": str(p.answer), "wrong_step": at})
    return out


def position_baseline(train: Sequence[dict]) -> dict[int, float]:
    """P(good | step position) over the training records (the positions of
    their steps, 0-based); a position never seen scores the overall share."""
    counts: dict[int, list[float]] = {}
    for r in train:
        for k, lab in enumerate(r["step_labels"]):
            counts.setdefault(k, []).append(float(lab >= 0.5))
    return {k: sum(v) / len(v) for k, v in counts.items()}


def position_scores(model: dict[int, float], records: Sequence[dict]) -> list[float]:
    """The position-only score of every step of ``records`` (flattened)."""
    overall = sum(model.values()) / max(len(model), 1)
    return [model.get(k, overall) for r in records for k in range(len(r["steps"]))]


def step_labels(records: Sequence[dict]) -> list[float]:
    return [float(x) for r in records for x in r["step_labels"]]


def auc_by_position(scores: Sequence[float], records: Sequence[dict]) -> dict[int, tuple[float, int, int]]:
    """Step AUC of ``scores`` (flattened like ``step_labels``) within each step
    position: {position: (auc, steps, wrong steps)} for the positions that
    hold both labels.  A position-only scorer has 0.5 at every position, so
    this says which steps a PRM judges."""
    labels = step_labels(records)
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} steps")
    by: dict[int, tuple[list[float], list[float]]] = {}
    i = 0
    for r in records:
        for k in range(len(r["steps"])):
            s, y = by.setdefault(k, ([], []))
            s.append(float(scores[i]))
            y.append(labels[i])
            i += 1
    return {k: (auc(s, y), len(y), sum(1 for v in y if v < 0.5)) for k, (s, y) in sorted(by.items())
            if 0 < sum(1 for v in y if v >= 0.5) < len(y)}
