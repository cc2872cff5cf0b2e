#!/usr/bin/env python
"""Build reward-model data: process (Math-Shepherd) and outcome records.

Math-Shepherd labels: for each step prefix of each solution, a policy samples
N completions; a step is good when any completion (--mode hard) reaches the
reference answer, or its label is the share that does (--mode soft).  With a
policy checkpoint every step prefix of every solution goes to the rollout
engine in one batched generate call (N samples each).

    # the policy's own samples -> PRM data (Math-Shepherd) and ORM data (graded)
    python tools/build_prm_data.py --policy-load runs/sft --questions q.jsonl \\
        --solutions-per-question 4 --samples 8 --mode hard \\
        --output prm.jsonl --orm-output orm.jsonl
    # label given solutions with a policy checkpoint or any Python callable
    python tools/build_prm_data.py --input sols.jsonl --output prm.jsonl --policy-load runs/sft
    python tools/build_prm_data.py --input sols.jsonl --output prm.jsonl --policy pkg.mod:fn
    # convert the step-labelled BiRM format (steps closed by 'ки')
    python tools/build_prm_data.py --birm ../shared/data/process_supervision/birm/x.jsonl \\
        --birm-label step_labels --output prm.jsonl

Questions: {question, answer} per line, prompted with --prompt-template
(default: the RL stage's zero-shot CoT prompt).  Solutions: {question,
answer, steps: [...]} or {question, answer, solution} (split on
--step-separator).  --tokenizer-type/--tokenizer-model must be the policy's.
Under torchrun (--tensor-model-parallel-size) every rank samples the same
tokens and rank 0 writes.  Exit status 2 with one line on stderr for bad
arguments or input.
"""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.checkpoint import CheckpointError  # noqa: E402
from megatron_dsm.config import ConfigError  # noqa: E402
from megatron_dsm.data.tokenizer import TokenizerError, build_tokenizer  # noqa: E402
from megatron_dsm.io import read_jsonl, write_jsonl  # noqa: E402
from megatron_dsm.rl import rm_sampling  # noqa: E402
from megatron_dsm.rl.prm_labels import BIRM_LABELS, LABEL_MODES, read_birm, shepherd_label_batch  # noqa: E402
from megatron_dsm.rl.rm_data import RewardDataError, split_steps  # noqa: E402
from megatron_dsm.rl.run import COT_PROMPT, read_items  # noqa: E402


def import_policy(spec: str):
    mod, _, name = spec.partition(":")
    if not mod or not name:
        raise ConfigError(f"--policy must be module:callable, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"--policy {spec}: cannot import ({e})") from None
    if not callable(fn):
        raise ConfigError(f"--policy {spec} is not callable")

    def batch(requests, n):
        return [list(fn(q, prefix, n)) for q, prefix in requests]
    return batch


def read_solutions(path, separator):
    out, split_any = [], False
    for lineno, r in read_jsonl(path, error=RewardDataError, require_object=False):
        steps = r.get("steps") if isinstance(r, dict) else None
        if steps is None and isinstance(r, dict) and isinstance(r.get("solution"), str):
            steps = split_steps(r["solution"], separator)
            split_any = split_any or len(steps) > 1
        else:
            split_any = True
        if not isinstance(r, dict) or not isinstance(r.get("question"), str) or "answer" not in r \
                or not isinstance(steps, list) or not steps:
            raise RewardDataError(f"{path}:{lineno}: need question, answer and steps (or solution)")
        out.append({"question": r["question"], "steps": [str(s) for s in steps], "answer": str(r["answer"])})
    if not out:
        raise RewardDataError(f"{path}: no records")
    if not split_any:
        raise RewardDataError(f"{path}: no solution contains the step separator {separator!r}; "
                              f"give --step-separator (the text between steps) or 'steps' lists")
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", help="jsonl of PRM records {question, steps, step_labels, answer}")
    p.add_argument("--orm-output", help="with --questions: jsonl of ORM records {question, solution, label}")
    p.add_argument("--questions", help="jsonl of {question, answer}: label the policy's own samples")
    p.add_argument("--input", help="jsonl of solutions to label (Math-Shepherd)")
    p.add_argument("--birm", help="BiRM step-labelled jsonl to convert instead")
    p.add_argument("--birm-label", default="step_labels", choices=BIRM_LABELS)
    p.add_argument("--policy", help="module:callable (question, prefix_steps, n) -> n completions")
    p.add_argument("--policy-load", help="checkpoint of the training loop used as the policy")
    p.add_argument("--tokenizer-model", help="the policy's tokenizer (tokenizer.json / .model)")
    p.add_argument("--tokenizer-type", default="auto")
    p.add_argument("--engine", default="auto", choices=("auto", "direct", "megatron"), help="rollout engine")
    p.add_argument("--tensor-model-parallel-size", type=int, default=1)
    p.add_argument("--prompt-template", default=COT_PROMPT, help="prompt of a question ({question})")
    p.add_argument("--solutions-per-question", type=int, default=4, help="--questions: samples per question")
    p.add_argument("--samples", type=int, default=8, help="completions per step prefix (N)")
    p.add_argument("--mode", default="hard", choices=LABEL_MODES)
    p.add_argument("--step-separator", default="\n\n")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def check(a) -> None:
    if sum(bool(x) for x in (a.input, a.birm, a.questions)) != 1:
        raise ConfigError("give exactly one of --questions (sample and label), --input (label) or --birm")
    if not (a.output or (a.questions and a.orm_output)):
        raise ConfigError("give --output (and with --questions, or only, --orm-output)")
    if a.orm_output and not a.questions:
        raise ConfigError("--orm-output needs --questions (graded samples of the policy)")
    if a.questions and not a.policy_load:
        raise ConfigError("--questions samples from a policy checkpoint: give --policy-load")
    if a.input and bool(a.policy) == bool(a.policy_load):
        raise ConfigError("Math-Shepherd labelling needs exactly one of --policy or --policy-load")
    if "{question}" not in a.prompt_template:
        raise ConfigError("--prompt-template must contain {question}")
    if a.samples < 1 or a.solutions_per_question < 1:
        raise ConfigError("--samples and --solutions-per-question must be >= 1")


def build(a) -> tuple[list[dict], list[dict]]:
    """(PRM records, ORM records) as the arguments ask."""
    if a.birm:
        skipped: list = []
        records = read_birm(a.birm, a.birm_label, skipped_out=skipped)
        if skipped:
            print(f"skipped {len(skipped)} output(s) with non-numeric labels (line:output): "
                  f"{', '.join(skipped[:10])}", file=sys.stderr)
        return records, []
    sols = read_solutions(a.input, a.step_separator) if a.input else None
    items = read_items(a.questions, a.prompt_template) if a.questions else None
    if a.policy:
        policy = import_policy(a.policy)
    else:
        tok = build_tokenizer(a.tokenizer_type, a.tokenizer_model)
        sampler = rm_sampling.load_policy_sampler(a.policy_load, tok, engine=a.engine,
                                                  tp=a.tensor_model_parallel_size, seed=a.seed)
        template = a.prompt_template
        policy = rm_sampling.SamplerPolicy(sampler, lambda q: template.format(question=q),
                                           separator=a.step_separator, max_new_tokens=a.max_new_tokens,
                                           temperature=a.temperature, seed=a.seed + 1)
    label = dict(n=a.samples, mode=a.mode, separator=a.step_separator)
    if sols is not None:
        labels = shepherd_label_batch(sols, policy, **label)
        return [dict(s, step_labels=lab) for s, lab in zip(sols, labels)], []
    samples = rm_sampling.sample_solutions(sampler, items, n=a.solutions_per_question,
                                           max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                                           seed=a.seed)
    prm = rm_sampling.process_records(samples, policy, **label) if a.output else []
    return prm, rm_sampling.outcome_records(samples)


def main(argv=None) -> int:
    a = parse(argv)
    try:
        check(a)
        prm, orm = build(a)
    except (ConfigError, RewardDataError, CheckpointError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        platform.destroy_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        if a.output:
            write_jsonl(a.output, prm)
            steps = sum(len(r["steps"]) for r in prm)
            good = sum(sum(r["step_labels"]) for r in prm)
            print(f"solutions {len(prm)} | steps {steps} | mean step label "
                  f"{good / max(steps, 1):.3f} -> {a.output}")
        if a.orm_output:
            write_jsonl(a.orm_output, orm)
            right = sum(r["label"] for r in orm)
            print(f"outcome records {len(orm)} | graded right {right / max(len(orm), 1):.3f} -> {a.orm_output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
