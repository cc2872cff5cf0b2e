"""Reward-model metrics: accuracy, ROC AUC, and best-of-N reranking.

* accuracy: share of items whose thresholded score agrees with the label.
* AUC by the rank statistic (Mann-Whitney U): with scores ranked 1..n (ties
  get the mean of the ranks they span), ``AUC = (R_pos - n_pos (n_pos+1)/2) /
  (n_pos n_neg)`` where ``R_pos`` is the sum of the positives' ranks.  It is
  the probability that a random positive outscores a random negative, ties
  counting one half.
* best-of-N (the paper's use of a reward model for reranking, cf. its Sec. 5
  / Math-Shepherd): for each question with N sampled solutions, pick the
  top-scored one; compare with majority voting over the final answers
  (``eval.metrics.majority_vote``) and with the expected accuracy of a random
  choice (the share of correct solutions).
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

import numpy as np

from megatron_dsm.eval.metrics import majority_vote


def _as_labels(labels) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    return y >= 0.5


def accuracy(scores, labels, threshold: float = 0.5) -> float:
    """Share of (score >= threshold) == (label >= 0.5)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = _as_labels(labels)
    if s.size != y.size:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if s.size == 0:
        raise ValueError("accuracy of an empty set")
    return float(np.mean((s >= threshold) == y))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``; tied values share the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    sx = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def auc(scores, labels) -> float:
    """ROC AUC by the rank statistic (module docstring)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = _as_labels(labels)
    if s.size != y.size:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes (positives {n_pos}, negatives {n_neg})")
    r = average_ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def best_of_n(groups: Sequence[dict], seed: int = 0) -> dict:
    """Reranking accuracy over questions.

    Each group is ``{"scores": [N], "correct": [N bools], "answers": [N str|None]}``
    for the N solutions of one question.  Returns the accuracy of picking the
    top-scored solution (ties: the first), of majority voting over answers,
    of the expected random choice (mean share correct), and of one seeded
    random draw, plus ``pass@N`` (any correct) as the ceiling."""
    if not groups:
        raise ValueError("best_of_n needs at least one group")
    rng = random.Random(seed)
    top = maj = rand_exp = rand_draw = any_ok = 0.0
    for k, g in enumerate(groups):
        s, c = list(g["scores"]), [bool(x) for x in g["correct"]]
        a: list[Optional[str]] = list(g.get("answers") or [None] * len(c))
        if not (len(s) == len(c) == len(a)) or not s:
            raise ValueError(f"group {k}: scores, correct and answers must have the same non-zero length")
        top += c[int(np.argmax(s))]
        voted = majority_vote(a)
        if voted is not None:
            # correctness of the voted answer: that of any solution giving it
            maj += next(ok for ans, ok in zip(a, c) if ans == voted)
        rand_exp += sum(c) / len(c)
        rand_draw += c[rng.randrange(len(c))]
        any_ok += any(c)
    n = len(groups)
    return {"best_of_n": top / n, "majority": maj / n, "random": rand_exp / n,
            "random_draw": rand_draw / n, "pass_at_n": any_ok / n, "questions": n}
