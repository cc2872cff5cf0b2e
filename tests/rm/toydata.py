"""Synthetic GSM8K-style arithmetic whose reward labels are known and learnable.

Outcome data: a solution ``"a + b = c. The answer is c."``; a corrupted one
changes the final number, and the project's grader labels both against the
reference ``c``.  Process data: three steps
``"a + b = c."``, ``"c + d = e."``, ``"The answer is e."``; a planted error
makes step 2 continue from a wrong number (or the final step state a wrong
number), and every step from the error on is labelled bad (it can no longer
reach the right answer: Math-Shepherd's semantics).
"""
import random

NAMES = ["Tom", "Ann", "Bob", "Eve", "Sam", "Mia", "Leo", "Zoe"]
ITEMS = ["apples", "pens", "coins", "books", "cards", "shells"]


def question(rng: random.Random):
    a, b, d = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
    n, it = rng.choice(NAMES), rng.choice(ITEMS)
    q = f"{n} has {a} {it}, gets {b} more, then {d} more. How many {it}?"
    return q, a, b, d


def wrong(rng: random.Random, x: int) -> int:
    y = x
    while y == x:
        y = max(1, x + rng.choice([-3, -2, -1, 1, 2, 3]))
    return y


def steps_for(a: int, b: int, d: int, rng: random.Random | None = None, error_at: int | None = None):
    """The three steps; ``error_at`` 1 = step 2 starts from a wrong number,
    2 = the final answer is wrong."""
    c = a + b
    c2 = wrong(rng, c) if error_at == 1 else c
    e = c2 + d
    e2 = wrong(rng, e) if error_at == 2 else e
    return [f"{a} + {b} = {c}.", f"{c2} + {d} = {e}.", f"The answer is {e2}."], a + b + d


def orm_records(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for k in range(n):
        q, a, b, d = question(rng)
        c = a + b + d
        final = c if k % 2 == 0 else wrong(rng, c)
        sol = f"{a} + {b} + {d} = {c}. The answer is {final}."
        out.append({"question": q, "solution": sol, "answer": str(c)})
    return out


def prm_records(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for k in range(n):
        q, a, b, d = question(rng)
        err = [None, 1, 2][k % 3]
        steps, _ = steps_for(a, b, d, rng, err)
        labels = [1, 1, 1] if err is None else ([1, 0, 0] if err == 1 else [1, 1, 0])
        out.append({"question": q, "steps": steps, "step_labels": labels})
    return out


def corpus_texts(seed: int = 0, n: int = 400):
    """Text to train a small BPE on (so examples are a few dozen tokens)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        q, a, b, d = question(rng)
        texts.append(f"User: {q}\n\nAssistant: {a} + {b} = {a + b}.\n\n{a + b} + {d} = {a + b + d}."
                     f"\n\nThe answer is {a + b + d}. {a} + {b} + {d} = {a + b + d}.")
    return texts
