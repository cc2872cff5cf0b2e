"""Reward-model data from a policy's own samples: the paper's RM data and
iterative RL's refresh (Algorithm 1, line 10).

1. ``sample_solutions``: G solutions per question from the policy through
   its rollout engine (``rl.sampler.PolicySampler``: direct or megatron), one
   batched generate call;
2. ``outcome_records``: each solution graded against the reference answer
   (outcome RM records ``{question, solution, label}``);
3. ``process_records``: Math-Shepherd labels of each solution's steps
   (``rl.prm_labels.shepherd_label_batch``), the completions of every step
   prefix of every solution sampled from the same policy in one batched
   generate call with ``n`` samples per prefix (``SamplerPolicy``)
   (process RM records ``{question, steps, step_labels, answer}``).

``load_policy_sampler`` puts a sampler over a policy checkpoint of the
training loop (tools/build_prm_data.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

from megatron_dsm import checkpoint, platform
from megatron_dsm.config import ConfigError
from megatron_dsm.eval.grading import grade
from megatron_dsm.models import config as model_config
from megatron_dsm.models.generation import SamplingParams
from megatron_dsm.models.gpt import build_model, transformer_config
from megatron_dsm.rl.prm_labels import shepherd_label_batch
from megatron_dsm.rl.rm_data import split_steps
from megatron_dsm.rl.rollout import Item
from megatron_dsm.rl.sampler import PolicySampler


def _params(sampler: PolicySampler, *, n: int, max_new_tokens: int, temperature: float,
            top_p: float, seed: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
                          stop_ids=(sampler.eod,), seed=seed)


class SamplerPolicy:
    """Math-Shepherd's completer over a policy's rollout engine (a
    ``prm_labels.BatchPolicy``): the prompt of a request is the question's
    prompt, then the prefix steps joined by the separator and one more
    separator, so the policy writes the next steps; all requests go to the
    engine in one generate call (``max_prompts`` splits a larger batch)."""

    def __init__(self, sampler: PolicySampler, prompt_of: Callable[[str], str], *, separator: str,
                 max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 weights_from=None, max_prompts: int | None = None):
        self.sampler, self.prompt_of, self.separator = sampler, prompt_of, separator
        self.kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        self.seed, self.weights_from, self.max_prompts = seed, weights_from, max_prompts
        self.calls = 0

    def prompt(self, question: str, prefix: Sequence[str]) -> str:
        return f"{self.prompt_of(question)} {self.separator.join(prefix)}{self.separator}"

    def __call__(self, requests: Sequence[tuple[str, list[str]]], n: int) -> list[list[str]]:
        items = [Item(self.prompt(q, p), q, "") for q, p in requests]
        step = self.max_prompts or max(len(items), 1)
        texts: list[str] = []
        for i in range(0, len(items), step):
            params = _params(self.sampler, n=n, seed=self.seed + self.calls, **self.kw)
            out = self.sampler.generate(items[i:i + step], params, weights_from=self.weights_from)
            texts += [self.sampler.decode_response(c) for c in out.completions]
            self.calls += 1
        return [texts[i * n:(i + 1) * n] for i in range(len(items))]


def sample_solutions(sampler: PolicySampler, items: Sequence[Item], *, n: int, max_new_tokens: int,
                     temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                     weights_from=None) -> list[dict]:
    """``n`` sampled solutions per question, one generate call:
    ``{question, answer, solution}`` in question-major order."""
    params = _params(sampler, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                     top_p=top_p, seed=seed)
    out = sampler.generate(list(items), params, weights_from=weights_from)
    texts = [sampler.decode_response(c) for c in out.completions]
    return [{"question": it.question, "answer": str(it.answer), "solution": texts[i * n + j]}
            for i, it in enumerate(items) for j in range(n)]


def outcome_records(samples: Sequence[dict], *, grader: str = "dsm") -> list[dict]:
    """Outcome-RM records ``{question, solution, label}``, label =
    grade(solution, answer); empty solutions are left out."""
    return [{"question": s["question"], "solution": s["solution"].strip(),
             "label": float(grade(s["solution"], s["answer"], grader=grader))}
            for s in samples if s["solution"].strip()]


def process_records(samples: Sequence[dict], policy, *, n: int, mode: str = "hard",
                    separator: str = "\n\n", grader: str = "dsm") -> list[dict]:
    """Process-RM records ``{question, steps, step_labels, answer}``: the
    samples' steps (split on ``separator``) with Math-Shepherd labels from
    ``policy`` (a ``BatchPolicy``, e.g. ``SamplerPolicy``: one call)."""
    sols = [{"question": s["question"], "answer": s["answer"], "steps": split_steps(s["solution"], separator)}
            for s in samples]
    sols = [s for s in sols if s["steps"]]
    labels = shepherd_label_batch(sols, policy, n=n, mode=mode, separator=separator, grader=grader)
    return [dict(s, step_labels=lab) for s, lab in zip(sols, labels)]


def load_policy_sampler(load: str, tokenizer, *, engine: str = "auto", tp: int = 1,
                        seed: int = 0) -> PolicySampler:
    """A sampler over the language model of a training-loop checkpoint (weights
    only), at TP ``tp`` (all TP ranks sample the same tokens)."""
    cfg = model_config.from_checkpoint(load)
    if tokenizer.vocab_size > cfg.padded_vocab_size(tp):
        raise ConfigError(f"{load}: the tokenizer has {tokenizer.vocab_size} tokens but the policy's "
                          f"vocabulary is {cfg.vocab_size}: wrong tokenizer?")
    platform.initialize_distributed(tp, 1, seed=seed)
    tconfig = transformer_config(cfg, tp=tp, bf16=platform.cuda_available(), perform_initialization=False)
    model = build_model(cfg, tconfig)
    checkpoint.load_checkpoint(load, model, None, finetune=True)
    model.eval()
    return PolicySampler(engine, model, tokenizer, vocab_size=cfg.vocab_size)
