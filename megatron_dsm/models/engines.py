"""Choosing a rollout engine, and admitting rows against a KV-cache budget.

Three engines sit behind ``generation.RolloutEngine`` (RL rollouts and
evaluation both sample through it):

* ``direct``: ``direct_decode.DirectRolloutEngine``, a module-free forward
  over the policy's own tensors (CPU: per-call overhead dominates there);
* ``megatron``: ``generation.MegatronRolloutEngine``, ``GPTModel.forward``
  with megatron-core's static KV cache;
* ``vllm``: ``vllm_engine.VLLMRolloutEngine``, vLLM colocated in the
  policy's processes and refitted from its weights before each rollout.

``auto`` picks vllm on a GPU when vLLM is installed and the model is one it
can be refitted from, else the direct engine where it supports the model on
the CPU, else megatron.

Admission.  The direct and megatron engines decode a static batch whose KV
cache is allocated whole (L x 2 x rows x (prompt + new tokens) x KV heads/TP
x head dim), so all rows of a rollout at once can exceed the device:
``Admitted`` runs them in chunks of at most ``max_rows`` rows, the rows a
KV-cache budget holds for the request at hand when one is given
(``kv_rows``).  A question's G samples stay in one chunk where the budget
allows (they share the prompt prefill).  vLLM admits rows against its own
paged KV cache (``VLLMOptions.kv_cache_gib``, ``max_num_seqs``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from megatron_dsm import platform
from megatron_dsm.models.direct_decode import DirectRolloutEngine, direct_by_default
from megatron_dsm.models.generation import (GenerationError, GenerationOutput, MegatronRolloutEngine,
                                            RolloutEngine, SamplingParams)
from megatron_dsm.models.gpt import unwrap, whole_model_reason
from megatron_dsm.models.vllm_engine import VLLMOptions, VLLMRolloutEngine, vllm_available

ENGINES = ("auto", "direct", "megatron", "vllm")

# vLLM under torchrun is one engine per process (its process groups are
# global): every sampler of a process shares it and refits it from its own model.
_VLLM: dict = {}


def auto_engine(model) -> str:
    """What ``auto`` picks for ``model`` (module docstring)."""
    if platform.cuda_available() and vllm_available() and whole_model_reason(model) is None:
        return "vllm"
    return "direct" if direct_by_default(model) else "megatron"


def engine_for(kind: str, model, *, model_cfg=None, pad_id: int = 0, vocab_size: Optional[int] = None,
               decode=None, max_rows: Optional[int] = None, kv_cache_gib: Optional[float] = None,
               vllm: Optional[VLLMOptions] = None) -> RolloutEngine:
    """The rollout engine ``kind`` names over ``model``.  ``model_cfg``
    (the policy's ``ModelConfig``) is needed by vllm; ``max_rows`` and
    ``kv_cache_gib`` bound the rows decoded at once (module docstring)."""
    if kind not in ENGINES:
        raise GenerationError(f"unknown rollout engine {kind!r}; choose one of {ENGINES}")
    if kind == "auto":
        kind = auto_engine(model)
    if kind == "vllm":
        if model_cfg is None:
            raise GenerationError("rollout engine vllm needs the policy's model config")
        opts = vllm or VLLMOptions()
        opts = dataclasses.replace(opts, max_num_seqs=max_rows or opts.max_num_seqs,
                                   kv_cache_gib=kv_cache_gib if kv_cache_gib is not None else opts.kv_cache_gib)
        if "engine" not in _VLLM:
            _VLLM["engine"] = VLLMRolloutEngine(model, model_cfg, pad_id=pad_id, vocab_size=vocab_size,
                                                decode=decode, options=opts)
            platform.before_destroy(_close_vllm)
        elif _VLLM["engine"].cfg != model_cfg:
            raise GenerationError("one vLLM engine per process: it was built for another model shape")
        return _VLLM["engine"]
    kw = dict(pad_id=pad_id, vocab_size=vocab_size, decode=decode)
    engine = MegatronRolloutEngine(model, **kw) if kind == "megatron" else DirectRolloutEngine(model, **kw)
    if max_rows is None and kv_cache_gib is None:
        return engine
    return Admitted(engine, max_rows=max_rows, kv_cache_bytes=None if kv_cache_gib is None
                    else int(kv_cache_gib * 2**30))


def _close_vllm() -> None:
    engine = _VLLM.pop("engine", None)
    if engine is not None:
        engine.close()


def kv_rows(model, budget_bytes: int, total_tokens: int) -> int:
    """Rows whose KV cache of ``total_tokens`` positions fits ``budget_bytes``
    on this rank (the static cache of the direct and megatron engines)."""
    m = unwrap(model)
    c = m.config
    tp = c.tensor_model_parallel_size
    groups = (c.num_query_groups or c.num_attention_heads) // tp
    width = next(m.parameters()).element_size()
    per_row = c.num_layers * 2 * total_tokens * groups * c.kv_channels * width
    return max(1, budget_bytes // per_row)


class Admitted(RolloutEngine):
    """A static-batch engine run in chunks of at most ``max_rows`` rows (or
    the rows ``kv_cache_bytes`` holds); the output is the rows in order.
    Greedy rows are the same as in one batch; a sampled chunk ``c`` draws
    with seed ``params.seed + c``."""

    def __init__(self, engine: RolloutEngine, *, max_rows: Optional[int] = None,
                 kv_cache_bytes: Optional[int] = None):
        if max_rows is not None and max_rows < 1:
            raise GenerationError(f"rows at once must be >= 1, got {max_rows}")
        self.engine, self.max_rows, self.kv_cache_bytes = engine, max_rows, kv_cache_bytes
        self.last_tokens_per_second = 0.0
        self.last_chunks = 0

    @property
    def model(self):
        return self.engine.model

    def update_weights(self, model) -> None:
        self.engine.update_weights(model)

    def rows_at_once(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> int:
        rows = len(prompts) * params.n
        if self.max_rows is not None:
            rows = min(rows, self.max_rows)
        if self.kv_cache_bytes is not None:
            total = max(len(p) for p in prompts) + params.max_new_tokens
            rows = min(rows, kv_rows(self.engine.model, self.kv_cache_bytes, total))
        return rows

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> GenerationOutput:
        if not prompts:
            raise GenerationError("no prompts given")
        chunks = admission_chunks(len(prompts), params.n, self.rows_at_once(prompts, params))
        outs = [self.engine.generate([prompts[i] for i in idx],
                                     dataclasses.replace(params, n=n, seed=params.seed + c))
                for c, (idx, n) in enumerate(chunks)]
        # a prompt's sub-chunks are consecutive: the rows stay prompt-major
        out = concat_outputs(outs)
        self.last_chunks = len(chunks)
        self.last_tokens_per_second = out.tokens_per_second
        return out


def admission_chunks(n_prompts: int, n: int, rows: int) -> list[tuple[list[int], int]]:
    """(prompt indices, samples each) per chunk, at most ``rows`` rows a chunk:
    whole groups of ``n`` samples while ``rows >= n``, a prompt's samples split
    over chunks otherwise."""
    if rows >= n:
        per = rows // n
        return [(list(range(i, min(i + per, n_prompts))), n) for i in range(0, n_prompts, per)]
    out = []
    for i in range(n_prompts):
        left = n
        while left:
            k = min(rows, left)
            out.append(([i], k))
            left -= k
    return out


def concat_outputs(outs: Sequence[GenerationOutput]) -> GenerationOutput:
    """Rows of several outputs in order; tokens, seconds and steps add up."""
    return GenerationOutput(prompts=[p for o in outs for p in o.prompts],
                            completions=[c for o in outs for c in o.completions],
                            logprobs=[lp for o in outs for lp in o.logprobs],
                            finished=[f for o in outs for f in o.finished],
                            new_tokens=sum(o.new_tokens for o in outs),
                            seconds=sum(o.seconds for o in outs), steps=sum(o.steps for o in outs))

