"""The demo's task: generated arithmetic word problems, and every file the
recipe's stages take from it.

Why this task: each stage's effect has to be measurable on 2 CPU cores in
minutes.  The problems (``rl.arith_task``: two operations on operands up to
9, train and held-out splits disjoint by construction) are GSM8K-shaped in
miniature, graded by the project's grader, and a tiny model learns them
within the demo's budget; GRPO measurably improves a policy on them
(examples/grpo_demo.py).

What is written (``write_task``), all generated here, so freely licensed:

* ``train.jsonl`` / ``heldout.jsonl``: ``{id, question, answer}``, the RL
  stage's questions and the held-out accuracy's benchmark;
* ``sft.jsonl``: ``{question, response}`` over the training problems, a share
  ``direct_share`` answering without the worked steps (as real SFT sets mix
  chain-of-thought with bare answers; the regime in which the paper finds
  RL lifts the top answer, Maj@K -> Top1);
* ``rm_questions.jsonl``: training questions on which the SFT policy is
  sampled and graded for the outcome reward model;
* ``pages.jsonl``: worked-solution "worksheet" web pages over training
  problems, mixed into the web sample that mining reads, labelled ``math``;
  some are *planted* contamination: pages quoting held-out problems, and
  pages quoting vendored GSM8K test problems (field ``planted``);
* ``benchmarks/``: the folder decontamination reads: the vendored GSM8K and
  MATH test sets and the held-out split (questions only: the solutions'
  equations are shared by every problem with the same numbers).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.io import read_jsonl, write_json, write_jsonl
from megatron_dsm.rl.arith_task import Problem, generate_problems

VENDORED = Path(__file__).resolve().parents[2] / "examples" / "data"
PAGE_HOST = "https://worksheets.example.org/word-problems"
FORUM_HOST = "https://homework-help.example.net/t"


@options
class TaskConfig:
    """The demo task (recipe section ``task:``)."""

    train_size: int = field(3000, min=1, help="training problems (pages, SFT, RL, RM samples)")
    heldout_size: int = field(300, min=1, help="held-out problems (accuracy after each stage)")
    max_value: int = field(9, min=2, help="largest starting number / operand")
    two_step_prob: float = field(1.0, min=0.0, max=1.0, help="share of two-operation problems")
    seed: int = field(0, help="generator seed")
    direct_share: float = field(0.5, min=0.0, max=1.0,
                                help="share of SFT responses that give only the final answer")
    pages: int = field(300, min=0, help="worked-solution web pages in the pool that mining reads")
    seed_pages: int = field(20, min=0, help="worked-solution pages among the mining seed's positives")
    problems_per_page: int = field(5, min=1, help="problems on one page")
    planted_heldout: int = field(10, min=0, help="pages that quote a held-out problem (contamination)")
    planted_gsm8k: int = field(10, min=0, help="pages that quote a vendored GSM8K test problem")
    rm_questions: int = field(0, min=0, help="training questions sampled for the reward model's data "
                              "(0: all of them)")

    def __post_init__(self):
        if self.rm_questions > self.train_size:
            raise ConfigError(f"rm_questions ({self.rm_questions}) is more than train_size "
                              f"({self.train_size}); 0 takes every training question")
        if self.rm_questions == 1:
            raise ConfigError("rm_questions must be 0 (all) or at least 2 (the reward model "
                              "holds some questions out for its AUC)")


_Q = re.compile(r"^(\w+) has (\d+) (\w+) and ")
_STEP = re.compile(r"(\d+)([+-])(\d+)=(\d+)")
_PAST = {"+": ("bought {n} more", "was given {n} more", "picked up {n} more"),
         "-": ("gave {n} away", "lost {n}", "sold {n}")}


def page_wording(p: Problem, rng: random.Random) -> str:
    """A problem in the worksheet's own words.  Why not the task's: the
    task's questions are one template, so any page quoting it shares
    10-grams with most held-out questions and decontamination would cut it;
    a page that words the problem otherwise is not contamination."""
    m = _Q.match(p.question)
    if m is None:
        raise ValueError(f"not an arithmetic task question: {p.question!r}")
    name, start, item = m.groups()
    acts = [rng.choice(_PAST[op]).format(n=b) for _, op, b, _ in (_STEP.match(s).groups() for s in p.steps)]
    story = f"{name} started out with {start} {item}. First {name} {acts[0]}"
    story += "".join(f", later {a}" for a in acts[1:])
    return f"{story}. Count the {item} at the end."


def _solution_page(i: int, problems: list[Problem], rng: random.Random) -> dict:
    body = [f"Word problems, worksheet {i + 1}", ""]
    for k, p in enumerate(problems, 1):
        body += [f"Problem {k}. {page_wording(p, rng)}", f"Solution. {p.solution}", ""]
    return {"id": f"task-page-{i:04d}", "url": f"{PAGE_HOST}/sheet-{i + 1}.html",
            "title": body[0], "text": "\n".join(body).strip(), "label": "math",
            "source": "generated: megatron_dsm/recipe/task.py"}


def _gsm8k_page(i: int, row: dict) -> dict:
    rationale, _, answer = str(row["answer"]).rpartition("####")
    text = (f"Can someone check my homework?\n\n{row['question']}\n\n"
            f"My work: {rationale.strip()}\nSo the answer is {answer.strip()}.")
    return {"id": f"task-gsm8k-{i:04d}", "url": f"{FORUM_HOST}/{1000 + i}", "title": "homework check",
            "text": text, "label": "math", "source": "generated: megatron_dsm/recipe/task.py",
            "planted": "gsm8k"}


def task_pages(cfg: TaskConfig, train: list[Problem], held: list[Problem]) -> tuple[list[dict], list[dict]]:
    """(pool pages, seed pages): worksheet pages over training problems,
    some pool pages quoting held-out problems, and forum pages quoting GSM8K
    test problems; the seed pages come after the pool's in the training
    problems (the two sets share no page)."""
    rng = random.Random(cfg.seed + 1)
    per = cfg.problems_per_page
    sheets = [_solution_page(i, [train[(i * per + k) % len(train)] for k in range(per)], rng)
              for i in range(cfg.pages + cfg.seed_pages)]
    pages, seed = sheets[:cfg.pages], sheets[cfg.pages:]
    for j, p in enumerate(held[:cfg.planted_heldout]):
        page = pages[(j * 7) % len(pages)] if pages else None
        if page is None:
            break
        page["text"] += f"\n\nBonus problem. {p.question}\nSolution. {p.solution}"
        page["planted"] = "heldout"
    gsm8k = VENDORED / "gsm8k" / "test.jsonl"
    if cfg.planted_gsm8k:
        rows = [r for _, r in read_jsonl(gsm8k, error=ConfigError)]
        for j in range(cfg.planted_gsm8k):
            pages.append(_gsm8k_page(j, rows[(j * 37) % len(rows)]))
    return pages, seed


def _qa(p: Problem, i: int, split: str) -> dict:
    return {"id": f"{split}-{i}", "question": p.question, "answer": str(p.answer)}


def write_task(cfg: TaskConfig, out: str | Path) -> dict:
    """Write every task file under ``out``; returns their counts."""
    out = Path(out)
    train, held = generate_problems(cfg.train_size, cfg.heldout_size, seed=cfg.seed,
                                    max_value=cfg.max_value, two_step_prob=cfg.two_step_prob)
    rng = random.Random(cfg.seed + 2)
    sft = [{"question": p.question,
            "response": (p.direct_completion if rng.random() < cfg.direct_share else p.completion).strip()}
           for p in train]
    write_jsonl(out / "train.jsonl", [_qa(p, i, "train") for i, p in enumerate(train)])
    write_jsonl(out / "heldout.jsonl", [_qa(p, i, "heldout") for i, p in enumerate(held)])
    write_jsonl(out / "sft.jsonl", sft)
    rm_train = train[:cfg.rm_questions] if cfg.rm_questions else train
    write_jsonl(out / "rm_questions.jsonl", [_qa(p, i, "train") for i, p in enumerate(rm_train)])
    pages, seed = task_pages(cfg, train, held)
    write_jsonl(out / "pages.jsonl", pages)
    write_jsonl(out / "seed_pages.jsonl", seed)
    bench = out / "benchmarks"
    write_jsonl(bench / "arith_heldout" / "test.jsonl",
                [{"id": f"heldout-{i}", "question": p.question} for i, p in enumerate(held)])
    for name, src in (("gsm8k_openai", VENDORED / "gsm8k" / "test.jsonl"),
                      ("math", VENDORED / "math" / "test.jsonl")):
        (bench / name).mkdir(parents=True, exist_ok=True)
        link = bench / name / "test.jsonl"
        if not link.exists():
            link.symlink_to(src)
    counts = {"train": len(train), "heldout": len(held), "sft": len(sft), "pages": len(pages),
              "planted": {k: sum(p.get("planted") == k for p in pages) for k in ("heldout", "gsm8k")}}
    write_json(out / "task.json", counts)
    return counts
