#!/usr/bin/env python
"""Build process-reward-model data (jsonl of {question, steps, step_labels, answer}).

Math-Shepherd labels: for each step prefix of each solution, a policy samples
N completions; a step is good when any completion (--mode hard) reaches the
reference answer, or its label is the share that does (--mode soft).

    # a checkpoint of the training loop as the policy
    python tools/build_prm_data.py --input sols.jsonl --output prm.jsonl \\
        --policy-load runs/sft_tiny --tokenizer-model tok.json --samples 8 --mode hard
    # any Python callable (question, prefix_steps, n) -> n completions
    python tools/build_prm_data.py --input sols.jsonl --output prm.jsonl --policy pkg.mod:fn
    # convert the step-labelled BiRM format (steps closed by 'ки')
    python tools/build_prm_data.py --birm ../shared/data/process_supervision/birm/x.jsonl \\
        --birm-label step_labels --output prm.jsonl

Input records: {question, answer, steps: [...]} or {question, answer,
solution} (split on --step-separator).  Exit status 2 with one line on stderr
for bad arguments or input.
"""
import argparse
import importlib
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron_dsm.config import ConfigError  # noqa: E402
from megatron_dsm.io import read_jsonl  # noqa: E402
from megatron_dsm.data.sft import ChatTemplate  # noqa: E402
from megatron_dsm.rl.prm_labels import BIRM_LABELS, LABEL_MODES, read_birm, shepherd_labels  # noqa: E402
from megatron_dsm.rl.rm_data import RewardDataError, split_steps  # noqa: E402


class CheckpointPolicy:
    """Completions from a language-model checkpoint: the prompt is the chat
    template with the prefix steps as the start of the answer."""

    def __init__(self, load, tokenizer_model, tokenizer_type, *, separator, temperature,
                 max_new_tokens, seed):
        from megatron_dsm.eval.megatron_backend import MegatronGenerator

        self.gen = MegatronGenerator(load, tokenizer_model, tokenizer_type=tokenizer_type, seed=seed)
        self.t = ChatTemplate()
        self.sep, self.temperature, self.max_new_tokens = separator, temperature, max_new_tokens

    def __call__(self, question, prefix, n):
        prompt = self.t.user.format(content=question) + self.t.assistant.format(
            content=self.sep.join(prefix)) + self.sep
        return self.gen.generate([prompt], max_new_tokens=self.max_new_tokens,
                                 temperature=self.temperature, n=n)[0]


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
    return fn


def read_solutions(path, separator):
    out = []
    for lineno, r in read_jsonl(path, error=RewardDataError, require_object=False):
        steps = r.get("steps") if isinstance(r, dict) else None
        if steps is None and isinstance(r, dict) and isinstance(r.get("solution"), str):
            steps = split_steps(r["solution"], separator)
        if not isinstance(r, dict) or not isinstance(r.get("question"), str) or "answer" not in r \
                or not isinstance(steps, list) or not steps:
            raise RewardDataError(f"{path}:{lineno}: need question, answer and steps (or solution)")
        out.append({"question": r["question"], "steps": [str(s) for s in steps], "answer": str(r["answer"])})
    if not out:
        raise RewardDataError(f"{path}: no records")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="jsonl of PRM records")
    p.add_argument("--input", help="jsonl of solutions to label (Math-Shepherd)")
    p.add_argument("--birm", help="BiRM step-labelled jsonl to convert instead")
    p.add_argument("--birm-label", default="step_labels", choices=BIRM_LABELS)
    p.add_argument("--policy", help="module:callable (question, prefix_steps, n) -> n completions")
    p.add_argument("--policy-load", help="checkpoint of the training loop used as the policy")
    p.add_argument("--tokenizer-model", help="tokenizer for --policy-load")
    p.add_argument("--tokenizer-type", default="auto")
    p.add_argument("--samples", type=int, default=8, help="completions per step prefix (N)")
    p.add_argument("--mode", default="hard", choices=LABEL_MODES)
    p.add_argument("--step-separator", default="\n\n")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        if bool(a.input) == bool(a.birm):
            raise ConfigError("give exactly one of --input (Math-Shepherd labelling) or --birm (conversion)")
        if a.birm:
            skipped: list = []
            records = read_birm(a.birm, a.birm_label, skipped_out=skipped)
            if skipped:
                print(f"skipped {len(skipped)} output(s) with non-numeric labels (line:output): "
                      f"{', '.join(skipped[:10])}", file=sys.stderr)
        else:
            if bool(a.policy) == bool(a.policy_load):
                raise ConfigError("Math-Shepherd labelling needs exactly one of --policy or --policy-load")
            sols = read_solutions(a.input, a.step_separator)
            policy = import_policy(a.policy) if a.policy else CheckpointPolicy(
                a.policy_load, a.tokenizer_model, a.tokenizer_type, separator=a.step_separator,
                temperature=a.temperature, max_new_tokens=a.max_new_tokens, seed=a.seed)
            records = [dict(s, step_labels=shepherd_labels(
                s["question"], s["steps"], s["answer"], policy, n=a.samples, mode=a.mode,
                separator=a.step_separator)) for s in sols]
    except (ConfigError, RewardDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tmp = a.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, a.output)
    steps = sum(len(r["steps"]) for r in records)
    good = sum(sum(r["step_labels"]) for r in records)
    print(f"solutions {len(records)} | steps {steps} | mean step label {good / max(steps, 1):.3f} -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
