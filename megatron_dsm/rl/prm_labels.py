"""Process labels for PRM training: Math-Shepherd estimation and the BiRM
step-labelled format.

``shepherd_labels`` labels each step of a solution by completing it with a
policy and grading the completions (Wang et al. 2023, the labels behind the
paper's process supervision); ``read_birm`` reads step-labelled solutions
such as ../shared/data/process_supervision/birm.  Both give the process
records ``rl.rm_data`` reads; tools/build_prm_data.py writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from megatron_dsm.config import ConfigError
from megatron_dsm.eval.grading import grade
from megatron_dsm.io import read_jsonl
from megatron_dsm.rl.rm_data import RewardDataError

# (question, prefix steps, n) -> n completions: the text that follows the prefix
Policy = Callable[[str, list[str], int], list[str]]
# ([(question, prefix steps)], n) -> n completions per request, all in one go
BatchPolicy = Callable[[list[tuple[str, list[str]]], int], list[list[str]]]
LABEL_MODES = ("hard", "soft")


def shepherd_label_batch(solutions: Sequence[dict], policy: BatchPolicy, *, n: int,
                         mode: str = "hard", separator: str = "\n\n",
                         grader: str = "dsm") -> list[list[float]]:
    """Math-Shepherd step labels (Wang et al. 2023, the labels behind the
    paper's process supervision) of every step of every solution
    (``{question, steps, answer}``), with one call of ``policy`` for all of
    them: for each prefix ``steps[:k+1]`` short of the whole solution the
    policy writes ``n`` completions, and each prefix + completion is graded
    against ``answer``.  Hard estimation: the step is good (1.0) when any
    completion reaches the answer; soft: the share that does.  The last
    step's prefix is the whole solution, so its label is the grade of the
    solution itself (no completions)."""
    if mode not in LABEL_MODES:
        raise ConfigError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    if n < 1:
        raise ConfigError(f"samples per step must be >= 1, got {n}")
    requests, owners = [], []
    labels = []
    for i, s in enumerate(solutions):
        steps = list(s["steps"])
        labels.append([0.0] * len(steps))
        if steps:
            labels[i][-1] = float(grade(separator.join(steps), str(s["answer"]), grader=grader))
        for k in range(len(steps) - 1):
            requests.append((s["question"], steps[:k + 1]))
            owners.append((i, k))
    completions = list(policy(requests, n)) if requests else []
    if len(completions) != len(requests):
        raise ValueError(f"policy answered {len(completions)} of {len(requests)} step prefixes")
    for (i, k), (_, prefix), comps in zip(owners, requests, completions):
        if len(comps) != n:
            raise ValueError(f"policy returned {len(comps)} completions, expected {n}")
        head = separator.join(prefix)
        ok = [grade(head + (separator + c.strip() if c.strip() else ""), str(solutions[i]["answer"]),
                    grader=grader) for c in comps]
        share = sum(ok) / n
        labels[i][k] = share if mode == "soft" else float(share > 0)
    return labels


def shepherd_labels(question: str, steps: Sequence[str], answer: str, policy: Policy, *, n: int,
                    mode: str = "hard", separator: str = "\n\n", grader: str = "dsm") -> list[float]:
    """``shepherd_label_batch`` for one solution, with a policy that
    completes one prefix at a time."""
    def batch(requests, k):
        return [list(policy(q, p, k)) for q, p in requests]

    sol = {"question": question, "steps": list(steps), "answer": answer}
    return shepherd_label_batch([sol], batch, n=n, mode=mode, separator=separator, grader=grader)[0]


BIRM_STEP_TAG = "ки"
BIRM_LABELS = ("step_labels", "step_h_label", "step_s_label")


def read_birm(path: str, label_key: str = "step_labels", tag: str = BIRM_STEP_TAG,
              skipped_out: list | None = None) -> list[dict]:
    """The step-labelled format of ../shared/data/process_supervision/birm:
    one problem per line with ``outputs[]``, each ``response`` a sequence of
    steps each closed by ``tag`` and one label per step under ``label_key``
    (``step_labels``; ``step_h_label`` hard or ``step_s_label`` soft
    Monte-Carlo value labels).  Returns PRM records ``{question, steps,
    step_labels, answer}``; a record whose step count disagrees with its
    labels is an error naming file, line and output.  Outputs whose labels
    are not booleans or numbers (BiRM's ``"[invalid]"``) are skipped and
    listed as ``"line:output"`` in ``skipped_out`` when given."""
    if label_key not in BIRM_LABELS:
        raise ConfigError(f"birm label key must be one of {BIRM_LABELS}, got {label_key!r}")
    p = Path(path)
    if not p.is_file():
        raise RewardDataError(f"{p}: file not found")
    out, skipped = [], []
    for lineno, rec in read_jsonl(p, error=RewardDataError):
        q = rec.get("question") or rec.get("input")
        if not isinstance(q, str) or not isinstance(rec.get("outputs"), list):
            raise RewardDataError(f"{p}:{lineno}: expected 'question' and an 'outputs' list")
        for j, o in enumerate(rec["outputs"]):
            steps = [s.strip() for s in str(o.get("response", "")).split(tag)]
            steps = [s for s in steps if s]
            labels = o.get(label_key)
            if not isinstance(labels, list) or len(labels) != len(steps):
                raise RewardDataError(f"{p}:{lineno}: outputs[{j}] has {len(steps)} steps but "
                                      f"{label_key} has {len(labels) if isinstance(labels, list) else 'no'} labels")
            if not all(isinstance(x, (bool, int, float)) for x in labels):
                # BiRM marks outputs it could not grade with the string "[invalid]"
                skipped.append(f"{lineno}:{j}")
                continue
            out.append({"question": q, "steps": steps, "step_labels": [float(x) for x in labels],
                        "answer": str(rec.get("ground_truth", ""))})
    if skipped_out is not None:
        skipped_out.extend(skipped)
    return out
