"""Rewards for GRPO: rule (grader), PoT (sandbox), outcome RM, process RM.

Outcome rewards give one number per sampled output o_i (the paper's r_i);
process rewards give one number per reasoning step plus the token index at
which each step ends (the paper's r_i^index(j) and index(j)), which
``algorithms.process_advantage`` turns into per-token advantages.

* ``RuleReward``: ``grade(completion, reference)`` -> ``correct`` / ``wrong``
  (1/0 by default, or +1/-1), minus ``format_penalty`` when no final answer
  can be extracted at all.
* ``PoTReward``: the completion is a Python program; it is run in the
  project's sandbox and its printed output is graded against the reference.
* ``ORMReward``: an in-process outcome reward model's ``score(pairs)``.
* ``MixedReward``: the rule reward plus a weighted outcome-RM score.
* ``ArithmeticStepReward``: rule-based step rewards for the toy task (a step
  is right when its equation holds; the last step carries the outcome).
* ``PRMStepReward``: an in-process process reward model's ``score_steps``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Protocol, Sequence

import torch

from megatron_dsm.eval.grading import extract_answer, grade
from megatron_dsm.eval.sandbox import execute
from megatron_dsm.rl.arith_task import step_is_correct


@dataclasses.dataclass
class StepRewards:
    """Per-response step rewards in token coordinates (for process advantages)."""

    rewards: torch.Tensor   # [N, K]
    ends: torch.Tensor      # [N, K] token index (within the response) of each step's last token
    mask: torch.Tensor      # [N, K]


class OutcomeReward(Protocol):
    def __call__(self, questions: Sequence[str], completions: Sequence[str],
                 references: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(rewards [N] float, correct [N] bool)."""


def _correct(completions, references, grader):
    return torch.tensor([bool(grade(c, str(r), grader=grader)) for c, r in zip(completions, references)])


@dataclasses.dataclass
class RuleReward:
    """The grader as a reward: ``correct`` for a right final answer, ``wrong``
    otherwise; ``format_penalty`` is subtracted when no answer is found."""

    correct: float = 1.0
    wrong: float = 0.0
    format_penalty: float = 0.0
    grader: str = "dsm"

    def __call__(self, questions, completions, references):
        ok = _correct(completions, references, self.grader)
        r = torch.where(ok, torch.tensor(self.correct), torch.tensor(self.wrong)).float()
        if self.format_penalty:
            missing = torch.tensor([extract_answer(c) is None for c in completions])
            r = r - self.format_penalty * missing.float()
        return r, ok


_CODE = re.compile(r"```(?:python)?\n(.*?)```", re.S)


@dataclasses.dataclass
class PoTReward:
    """Program-of-thought: run the completion's program (a fenced python block
    if present, else the whole text) in the sandbox; the last printed line is
    the answer."""

    correct: float = 1.0
    wrong: float = 0.0
    timeout: float = 5.0
    grader: str = "dsm"

    def __call__(self, questions, completions, references):
        ok = []
        for c, ref in zip(completions, references):
            m = _CODE.search(c)
            res = execute(m.group(1) if m else c, timeout=self.timeout)
            lines = (res.stdout or "").strip().splitlines() if res.status == "ok" else []
            ok.append(bool(lines) and grade(f"The answer is {lines[-1].strip()}", str(ref),
                                            grader=self.grader))
        ok_t = torch.tensor(ok, dtype=torch.bool)
        return torch.where(ok_t, torch.tensor(self.correct), torch.tensor(self.wrong)).float(), ok_t


def setup_model(model, trainer) -> None:
    """Build an in-process reward model beside the policy's trainer, if it
    is built that way (``rl.rm_serving.InProcessRewardModel``)."""
    setup = getattr(model, "setup", None)
    if setup is not None:
        setup(trainer)


def _rm_scores(model, questions, completions) -> torch.Tensor:
    scores = model.score(list(zip(questions, completions)))
    return torch.as_tensor(scores, dtype=torch.float32).reshape(-1).cpu()


@dataclasses.dataclass
class ORMReward:
    """An outcome reward model served in process (any object with
    ``score(pairs) -> [N]``, e.g. ``rl.rm_serving.InProcessRewardModel``):
    the reward is its probability that the answer is right.  The grader
    still decides ``correct`` (reported as accuracy)."""

    model: object
    grader: str = "dsm"

    def setup(self, trainer) -> None:
        setup_model(self.model, trainer)

    def __call__(self, questions, completions, references):
        return _rm_scores(self.model, questions, completions), _correct(completions, references, self.grader)


@dataclasses.dataclass
class MixedReward:
    """``--reward mixed``: the grader's rule reward plus ``weight`` times the
    outcome reward model's probability,

        r(o) = rule(o) + weight * P_RM(correct | q, o),

    so the grader's verdict decides the large part of the reward and the
    reward model ranks outputs that the grader scores alike (all right or
    all wrong in a group: GRPO's zero-spread groups then still learn)."""

    rule: RuleReward
    model: object
    weight: float = 0.5

    def setup(self, trainer) -> None:
        setup_model(self.model, trainer)

    def __call__(self, questions, completions, references):
        r, ok = self.rule(questions, completions, references)
        return r + self.weight * _rm_scores(self.model, questions, completions), ok


# ---------------------------------------------------------------------------
# process rewards
# ---------------------------------------------------------------------------


def char_to_token_ends(token_ids: Sequence[int], char_ends: Sequence[int],
                       decode: Callable[[list[int]], str]) -> list[int]:
    """Token index holding each character offset (the first token whose
    decoded prefix reaches it), clamped to the last token."""
    ids = list(token_ids)
    if not ids:
        return [0 for _ in char_ends]
    lengths = [len(decode(ids[:t + 1])) for t in range(len(ids))]
    out = []
    for end in char_ends:
        idx = next((t for t, n in enumerate(lengths) if n >= end), len(ids) - 1)
        out.append(idx)
    return out


def _to_step_rewards(per_response: list[list[tuple[int, float]]], token_ids, decode) -> StepRewards:
    n = len(per_response)
    k = max(1, max((len(s) for s in per_response), default=1))
    rewards = torch.zeros(n, k)
    ends = torch.zeros(n, k, dtype=torch.long)
    mask = torch.zeros(n, k)
    for i, steps in enumerate(per_response):
        tok_ends = char_to_token_ends(token_ids[i], [e for e, _ in steps], decode)
        for j, ((_, r), te) in enumerate(zip(steps, tok_ends)):
            rewards[i, j], ends[i, j], mask[i, j] = r, te, 1.0
    return StepRewards(rewards, ends, mask)


_SENTENCE = re.compile(r"[^.]*\.")


@dataclasses.dataclass
class ArithmeticStepReward:
    """Rule-checked steps for the arithmetic toy task: each sentence that is an
    equation scores ``correct``/``wrong`` by whether it holds; the final
    "The answer is N." sentence scores by the grader.  A completion that
    never states an answer gets one more ``wrong`` step on its last token.

    Why the missing answer must cost: with step rewards normalised over the
    group, a completion of one right equation and then <eod> collects only
    positive advantage and escapes the wrong-answer step longer ones risk;
    without this rule GRPO+PS on the demo task collapsed to such one-step
    completions within 30 steps (held-out accuracy 0.270 -> 0.007)."""

    correct: float = 1.0
    wrong: float = 0.0
    grader: str = "dsm"

    def __call__(self, questions, completions, references, token_ids, decode) -> StepRewards:
        per = []
        for c, ref in zip(completions, references):
            steps, answered = [], False
            for m in _SENTENCE.finditer(c):
                s = m.group(0)
                if "=" in s:
                    ok = step_is_correct(s)
                else:
                    ok = grade(s, str(ref), grader=self.grader)
                    answered = True
                steps.append((m.end(), self.correct if ok else self.wrong))
            if not answered:    # may end on the same token as the last equation: the
                steps.append((len(c), self.wrong))   # process advantage adds both there
            per.append(steps)
        return _to_step_rewards(per, token_ids, decode)


@dataclasses.dataclass
class PRMStepReward:
    """A process reward model served in process (``score_steps(pairs)`` ->
    one tensor of step probabilities per pair, steps split on ``separator``)."""

    model: object
    separator: str = "\n\n"

    def setup(self, trainer) -> None:
        setup_model(self.model, trainer)

    def __call__(self, questions, completions, references, token_ids, decode) -> StepRewards:
        scores = self.model.score_steps(list(zip(questions, completions)))
        per = []
        for c, sc in zip(completions, scores):
            ends, pos = [], 0
            for piece in c.split(self.separator):
                pos += len(piece)
                if piece.strip():
                    ends.append(pos)
                pos += len(self.separator)
            vals = [float(v) for v in torch.as_tensor(sc).reshape(-1)]
            per.append(list(zip(ends, vals))[:len(vals)] or [(len(c), 0.0)])
        return _to_step_rewards(per, token_ids, decode)
