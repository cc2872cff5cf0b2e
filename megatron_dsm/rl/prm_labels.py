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
LABEL_MODES = ("hard", "soft")


def shepherd_labels(question: str, steps: Sequence[str], answer: str, policy: Policy, *, n: int,
                    mode: str = "hard", separator: str = "\n\n", grader: str = "dsm") -> list[float]:
    """Math-Shepherd step labels (Wang et al. 2023, used for the paper's
    process supervision): for each prefix ``steps[:k+1]`` the policy writes
    ``n`` completions; each full solution (prefix + completion) is graded
    against ``answer``.  Hard estimation: the step is good (1.0) when any
    completion reaches the answer.  Soft: the share that does."""
    if mode not in LABEL_MODES:
        raise ConfigError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    if n < 1:
        raise ConfigError(f"samples per step must be >= 1, got {n}")
    labels = []
    for k in range(len(steps)):
        prefix = list(steps[:k + 1])
        completions = list(policy(question, prefix, n))
        if len(completions) != n:
            raise ValueError(f"policy returned {len(completions)} completions, expected {n}")
        head = separator.join(prefix)
        ok = [grade(head + (separator + c.strip() if c.strip() else ""), answer, grader=grader)
              for c in completions]
        share = sum(ok) / n
        labels.append(share if mode == "soft" else float(share > 0))
    return labels


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
