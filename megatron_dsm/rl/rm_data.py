"""Reward-model data: jsonl records, examples, token ids and batches.

Records (one JSON object per line):

* outcome: ``{question, solution, label}``, or ``{question, solution,
  answer}`` labelled by the project's grader against the reference answer;
* process: ``{question, steps: [...], step_labels: [...]}``, or ``{question,
  solution, step_labels}`` with the solution split on the step separator.

Tokenisation is segment by segment (prompt, then each step with the
separator that precedes it), so step ends are exact token positions,
independent of how a tokenizer would merge across the boundary.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Sequence

import torch

from megatron_dsm.data.sft import ChatTemplate
from megatron_dsm.eval.grading import grade
from megatron_dsm.io import read_jsonl

KINDS = ("outcome", "process")


class RewardDataError(ValueError):
    """Bad reward-model data; the message says which file, line and what."""


@dataclasses.dataclass
class RMExample:
    """One (question, solution) with a label per scored position."""

    question: str
    steps: list[str]          # outcome RM: one "step", the whole solution
    labels: list[float]       # one per step (outcome: one)


@dataclasses.dataclass
class Encoded:
    ids: list[int]
    positions: list[int]      # token index where each step's score is read
    labels: list[float]


def split_steps(solution: str, separator: str) -> list[str]:
    """Steps of a solution: the text between separators, empty pieces dropped."""
    return [s for s in (p.strip() for p in solution.split(separator)) if s]


def record_to_example(rec: dict, kind: str, *, separator: str = "\n\n",
                      grader: str = "dsm") -> RMExample:
    """A jsonl record -> RMExample; ValueError says what is wrong.

    outcome: ``{question, solution, label}`` or ``{question, solution, answer}``
    (label = grade(solution, answer)).  process: ``{question, steps: [...],
    step_labels: [...]}`` or ``{question, solution, step_labels}`` (solution
    split on the step separator)."""
    if not isinstance(rec, dict):
        raise ValueError("record must be a JSON object")
    q = rec.get("question")
    if not isinstance(q, str):
        raise ValueError("missing or non-string 'question'")
    if kind == "outcome":
        sol = rec.get("solution")
        if not isinstance(sol, str) or not sol.strip():
            raise ValueError("missing or empty 'solution'")
        if "label" in rec:
            lab = rec["label"]
            if isinstance(lab, bool) or lab in (0, 1) or (isinstance(lab, float) and 0 <= lab <= 1):
                return RMExample(q, [sol.strip()], [float(lab)])
            raise ValueError(f"'label' must be a boolean or a number in [0, 1], got {lab!r}")
        if "answer" in rec:
            return RMExample(q, [sol.strip()], [float(grade(sol, str(rec["answer"]), grader=grader))])
        raise ValueError("outcome record needs 'label' or a reference 'answer' to grade against")
    steps = rec.get("steps")
    if steps is None:
        sol = rec.get("solution")
        if not isinstance(sol, str):
            raise ValueError("process record needs 'steps' (list) or 'solution' (str)")
        steps = split_steps(sol, separator)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise ValueError("'steps' must be a non-empty list of non-empty strings")
    labels = rec.get("step_labels")
    if isinstance(labels, list) and len(steps) == 1 < len(labels) and "steps" not in rec:
        raise ValueError(f"the solution has no step separator {separator!r} but {len(labels)} step "
                         f"labels (set --step-separator to the text between its steps)")
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise ValueError(f"'step_labels' must be a list with one label per step ({len(steps)} steps)")
    out = []
    for lab in labels:
        if isinstance(lab, bool) or (isinstance(lab, (int, float)) and 0 <= lab <= 1):
            out.append(float(lab))
        else:
            raise ValueError(f"step label {lab!r} is not a boolean or a number in [0, 1]")
    return RMExample(q, [s.strip() for s in steps], out)


def read_records(paths: Sequence[str]) -> list[tuple[str, int, object]]:
    """(file, line, record) of every line of the jsonl files."""
    out = []
    for path in paths:
        if not Path(path).is_file():
            raise RewardDataError(f"{path}: file not found")
        out += [(str(path), n, rec) for n, rec in read_jsonl(path, error=RewardDataError, require_object=False)]
    if not out:
        raise RewardDataError(f"{', '.join(map(str, paths))}: no records")
    return out


def read_examples(paths: Sequence[str], kind: str, *, separator: str = "\n\n",
                  grader: str = "dsm") -> list[RMExample]:
    """Every record of the jsonl files; the first bad one is a
    ``RewardDataError`` naming file and line."""
    out = []
    for path, lineno, rec in read_records(paths):
        try:
            out.append(record_to_example(rec, kind, separator=separator, grader=grader))
        except ValueError as e:
            raise RewardDataError(f"{path}:{lineno}: {e}") from None
    return out


def examples_from_records(records: Sequence[dict], kind: str, *, separator: str = "\n\n",
                          grader: str = "dsm") -> list[RMExample]:
    """``record_to_example`` over records held in memory (record k of the
    list named in an error)."""
    out = []
    for k, rec in enumerate(records):
        try:
            out.append(record_to_example(rec, kind, separator=separator, grader=grader))
        except ValueError as e:
            raise RewardDataError(f"record {k}: {e}") from None
    if not out:
        raise RewardDataError("no reward-model records")
    return out


def encode(question: str, steps: Sequence[str], labels: Sequence[float] | None, tokenizer, *,
           separator: str = "\n\n", template: ChatTemplate | None = None,
           max_length: int | None = None, keep_solution: bool = False) -> Encoded | None:
    """Token ids of the formatted example and the scored positions.

    Outcome (one step): the score sits on the closing eos.  Process: on the
    last token of each step.  With ``max_length`` the sample keeps the steps
    that fit (outcome: None when the whole solution does not fit); with
    ``keep_solution`` the prompt loses its first tokens first, so that a
    solution scored in RL keeps its end (None only when the solution alone
    does not fit)."""
    template = template or ChatTemplate()
    ids = list(tokenizer.encode(template.user.format(content=question)))
    pieces = [list(tokenizer.encode(template.assistant.format(content=step) if k == 0 else separator + step))
              for k, step in enumerate(steps)]
    outcome = len(steps) == 1
    if keep_solution and max_length is not None:
        need = sum(len(p) for p in pieces) + (1 if outcome else 0)
        if need > max_length:
            return None
        ids = ids[max(0, len(ids) + need - max_length):]
    positions, kept = [], []
    for k, piece in enumerate(pieces):
        if not piece:
            continue
        if max_length is not None and len(ids) + len(piece) + (1 if outcome else 0) > max_length:
            break
        ids += piece
        positions.append(len(ids) - 1)
        kept.append(k)
    if not positions:
        return None
    if outcome:
        ids.append(int(tokenizer.eod))
        positions = [len(ids) - 1]
    labs = [float(labels[k]) for k in kept] if labels is not None else [0.0] * len(positions)
    return Encoded(ids, positions, labs)


def batch_tensors(items: Sequence[Encoded], seq_length: int, pad_id: int) -> dict:
    """Right-padded ``tokens [B, S]``, ``position_ids``, ``score_mask`` and
    ``targets`` (float, nonzero mask only at scored positions).  Causal
    attention needs no mask: padding sits after every scored position."""
    B = len(items)
    tok = torch.full((B, seq_length), pad_id, dtype=torch.long)
    mask = torch.zeros(B, seq_length)
    tgt = torch.zeros(B, seq_length)
    for b, e in enumerate(items):
        tok[b, :len(e.ids)] = torch.tensor(e.ids)
        mask[b, e.positions] = 1.0
        tgt[b, e.positions] = torch.tensor(e.labels)
    pos = torch.arange(seq_length).expand(B, seq_length).contiguous()
    return {"tokens": tok, "position_ids": pos, "score_mask": mask, "targets": tgt}


def encode_all(examples: Iterable[RMExample], tokenizer, *, separator: str, seq_length: int,
               stats: dict) -> list[Encoded]:
    """Every example that fits ``seq_length`` (the others are counted in
    ``stats['dropped_too_long']``)."""
    out = []
    for ex in examples:
        e = encode(ex.question, ex.steps, ex.labels, tokenizer, separator=separator,
                   max_length=seq_length)
        if e is None:
            stats["dropped_too_long"] = stats.get("dropped_too_long", 0) + 1
            continue
        out.append(e)
    if not out:
        raise RewardDataError(f"every example is longer than --seq-length {seq_length}")
    return out
