"""A toy math task the project generates itself: arithmetic word problems.

Why: GRPO must be shown to *learn* on 2 CPU cores without any download.
The problems are GSM8K-shaped in miniature ("Tom has 3 apples and buys 4
more. How many apples does he have?"), with short worked solutions
("3+4=7. The answer is 7.") so that a tiny char-level policy can be trained
on them in minutes and graded by the project's own grader
(``megatron_dsm.eval.grading.grade``, which reads "The answer is N").

A problem has one or two operations; each step of the worked solution is
one equation, which also gives a rule-checkable *process* reward (a step is
right when its equation holds) for the GRPO+PS setting of the toy task.

Train and held-out splits are disjoint by construction: a problem's
(names, numbers, operations) tuple decides its split through a hash, so the
same problem never lands in both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re

NAMES = ("Tom", "Ann", "Sam", "Mia", "Leo", "Eva", "Max", "Zoe")
ITEMS = ("apples", "pens", "cards", "books", "coins", "shells", "stamps", "eggs")
ADD = ("buys {n} more", "finds {n} more", "gets {n} more")
SUB = ("gives away {n}", "loses {n}", "sells {n}")

PROMPT_TEMPLATE = "Q: {question}\nA:"


@dataclasses.dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    solution: str          # worked solution, one equation per step, then the answer
    steps: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(question=self.question)

    @property
    def completion(self) -> str:
        return " " + self.solution

    @property
    def direct_completion(self) -> str:
        """The answer without the worked steps (harder for a small model)."""
        return f" The answer is {self.answer}."


def _make(rng: random.Random, max_value: int, two_step_prob: float) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start = rng.randint(1, max_value)
    n_ops = 2 if rng.random() < two_step_prob else 1
    value, clauses, steps = start, [], []
    for _ in range(n_ops):
        if value > 1 and rng.random() < 0.5:
            n = rng.randint(1, value - 1)
            clauses.append(rng.choice(SUB).format(n=n))
            steps.append(f"{value}-{n}={value - n}.")
            value -= n
        else:
            n = rng.randint(1, max_value)
            clauses.append(rng.choice(ADD).format(n=n))
            steps.append(f"{value}+{n}={value + n}.")
            value += n
    question = (f"{name} has {start} {item} and " + " and then ".join(clauses)
                + f". How many {item} does {name} have?")
    solution = " ".join(steps) + f" The answer is {value}."
    return Problem(question, value, solution, tuple(steps))


def _split_of(p: Problem, heldout_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(p.question.encode()).digest()[:8], "little")
    return "heldout" if (h % 10_000) < heldout_fraction * 10_000 else "train"


def generate_problems(n_train: int, n_heldout: int, *, seed: int = 0, max_value: int = 20,
                      two_step_prob: float = 0.5, heldout_fraction: float = 0.2
                      ) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train / held-out lists of distinct problems (deterministic in ``seed``)."""
    if n_train < 1 or n_heldout < 1:
        raise ValueError(f"need at least one train and one held-out problem, got {n_train}, {n_heldout}")
    rng = random.Random(seed)
    seen: set[str] = set()
    train: list[Problem] = []
    held: list[Problem] = []
    tries = 0
    while len(train) < n_train or len(held) < n_heldout:
        tries += 1
        if tries > 50 * (n_train + n_heldout) + 10_000:
            raise ValueError(f"cannot draw {n_train}+{n_heldout} distinct problems with "
                             f"max_value={max_value}; lower the counts or raise max_value")
        p = _make(rng, max_value, two_step_prob)
        if p.question in seen:
            continue
        seen.add(p.question)
        target = held if _split_of(p, heldout_fraction) == "heldout" else train
        limit = n_heldout if target is held else n_train
        if len(target) < limit:
            target.append(p)
    return train, held


_EQ = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)")


def step_is_correct(step: str) -> bool:
    """True when the step holds one equation ``a op b = c`` and it is right."""
    m = _EQ.search(step)
    if not m:
        return False
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    return {"+": a + b, "-": a - b, "*": a * b}[op] == c
