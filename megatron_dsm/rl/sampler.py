"""Sampling from a policy for rollouts and graded evaluation.

``PolicySampler`` puts one rollout engine (``models.engines.engine_for``:
direct, megatron, vllm) over a model's weights and speaks in questions:
prompts are encoded, responses decoded without their end token.
``accuracy`` grades a policy's answers to held-out questions, split over
data-parallel ranks.  ``engine_options`` turns the RL options into the
engine's (rows at once, KV-cache budget, vLLM's TP and memory share).
"""

from __future__ import annotations

from typing import Sequence

from megatron.core import parallel_state as ps

from megatron_dsm import platform
from megatron_dsm.models.engines import engine_for
from megatron_dsm.models.generation import GenerationOutput, SamplingParams
from megatron_dsm.models.vllm_engine import VLLMOptions
from megatron_dsm.rl.rollout import Item


def data_parallel() -> tuple[int, int, object]:
    """(rank, size, group) of this process's data-parallel group."""
    return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(), ps.get_data_parallel_group()


def engine_options(cfg, seed: int = 0) -> dict:
    """``engine_for`` keywords from an ``RLConfig``."""
    return dict(max_rows=cfg.rollout_batch, kv_cache_gib=cfg.rollout_kv_cache_gib,
                vllm=VLLMOptions(tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                                 gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, seed=seed))


class PolicySampler:
    def __init__(self, engine: str, model, tokenizer, *, vocab_size: int | None, **engine_kw):
        """``engine_kw``: ``engine_for``'s keywords (``model_cfg`` for vllm,
        ``engine_options``)."""
        self.tok = tokenizer
        self.pad_id = int(getattr(tokenizer, "pad", None) or 0)
        self.eod = int(tokenizer.eod)
        self.engine = engine_for(engine, model, pad_id=self.pad_id, vocab_size=vocab_size,
                                 decode=tokenizer.decode, **engine_kw)

    def release(self) -> None:
        """Free what the engine holds between rollouts (vLLM on a GPU: its
        weights and KV cache until the next refit; the other engines hold nothing)."""
        release = getattr(self.engine, "release", None)
        if release is not None:
            release()

    def encode_prompt(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode_response(self, ids: Sequence[int]) -> str:
        return self.tok.decode([i for i in ids if i != self.eod])

    def generate(self, items: Sequence[Item], params: SamplingParams, *,
                 weights_from=None) -> GenerationOutput:
        """``params.n`` samples per question; ``weights_from``: sample from that
        model's current weights (a live policy)."""
        if weights_from is not None:
            self.engine.update_weights(weights_from)
        return self.engine.generate([self.encode_prompt(it.prompt) for it in items], params)

    def accuracy(self, items: Sequence[Item], reward, *, max_new_tokens: int, weights_from=None,
                 temperature: float = 0.0, top_p: float = 1.0, n: int = 1, seed: int = 0,
                 chunk: int = 128) -> float:
        """Share of right answers (``reward``'s second output) to ``items``,
        split over data-parallel ranks: greedy by default; with
        ``temperature > 0`` the mean over ``n`` samples per question."""
        if not items:
            raise ValueError("no held-out questions to evaluate")
        if temperature <= 0 and n != 1:
            raise ValueError("greedy evaluation takes one sample per question (n=1)")
        rank, size, group = data_parallel()
        mine = list(items)[rank::size]
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p if temperature > 0 else 1.0, n=n,
                                stop_ids=(self.eod,), seed=seed + rank)
        if weights_from is not None:
            self.engine.update_weights(weights_from)
        right = 0
        for i in range(0, len(mine), chunk):
            part = mine[i:i + chunk]
            out = self.generate(part, params)
            rows = [it for it in part for _ in range(n)]
            _, ok = reward([it.question for it in rows], [self.decode_response(c) for c in out.completions],
                           [it.answer for it in rows])
            right += int(ok.sum())
        right, total = float(right), float(len(mine) * n)
        if size > 1:
            right, total = platform.all_reduce_values([right, total], group=group)
        return right / max(total, 1.0)
