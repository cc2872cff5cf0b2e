"""Questions, rollouts, per-token log-probs of responses, and the reference model.

A rollout of N = B x G outputs is laid out for training as one right-padded
token matrix ``[N, S]`` (prompt then response, no left padding, so plain
causal attention is right).  Everything the algorithms see is in *response
coordinates* ``[N, T]`` (T = longest response): the log-prob of response
token j of row i sits at column ``len(prompt_i) - 1 + j`` of the
``[N, S-1]`` log-prob matrix from ``generation.token_logprobs``; ``index``
holds those columns so one ``gather`` maps between the two.

The reference model pi_ref of the paper's Algorithm 1 is a frozen copy of
the policy in the same process.  ``ReferenceModel.reset_to(policy)`` copies
the policy's weights (done at the start of every RL iteration);
``offload=True`` keeps its weights in (pinned) host memory between its
passes (``training.offload.ParkedStorage``: on a GPU this frees their memory
for rollouts and training).  ``save``/``load`` write it into a run's
checkpoint as a dist checkpoint of its own (``checkpoint.save_module``):
once, sharded by TP/PP, loadable at another layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Sequence

import torch

from megatron_dsm import checkpoint, platform
from megatron_dsm.models.direct_decode import DirectDecoder, direct_by_default
from megatron_dsm.models.generation import token_logprobs
from megatron_dsm.models.gpt import unwrap
from megatron_dsm.rl import packing
from megatron_dsm.training.offload import ParkedStorage


@dataclasses.dataclass
class Item:
    """One RL question: the prompt the policy sees, the bare question (for
    reward models) and the reference answer (for the grader)."""

    prompt: str
    question: str
    answer: str


@dataclasses.dataclass
class RolloutBatch:
    tokens: torch.Tensor        # [N, S] prompt + response, right-padded
    index: torch.Tensor         # [N, T] column of each response token's log-prob in [N, S-1]
    mask: torch.Tensor          # [N, T] float, 1 on real response tokens
    prompt_lens: list[int]
    response_lens: list[int]

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    def rows(self, start: int, stop: int) -> "RolloutBatch":
        return RolloutBatch(self.tokens[start:stop], self.index[start:stop], self.mask[start:stop],
                            self.prompt_lens[start:stop], self.response_lens[start:stop])


@dataclasses.dataclass
class Rollout:
    """One exploration stage's samples, rewards and advantages (this rank's rows)."""

    batch: RolloutBatch
    texts: list[str]
    items: list[Item]                  # one per row (question repeated G times)
    rewards: torch.Tensor              # [N]
    correct: torch.Tensor              # [N] bool
    rollout_seconds: float
    new_tokens: int
    advantages: torch.Tensor | None = None   # [N, T], or a coefficient [N] (RFT)
    loss_mask: torch.Tensor | None = None    # [N, T]
    zero_spread_fraction: float = 0.0
    sampler_logprobs: torch.Tensor | None = None  # [N, T] the rollout engine's log-probs


def build_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                pad_id: int) -> RolloutBatch:
    """Right-padded [prompt + response] rows and the response index/mask."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("empty rollout")
    n = len(prompts)
    s = max(len(p) + len(r) for p, r in zip(prompts, responses))
    t = max(1, max(len(r) for r in responses))
    tokens = torch.full((n, max(s, 2)), pad_id, dtype=torch.long)
    index = torch.zeros(n, t, dtype=torch.long)
    mask = torch.zeros(n, t)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not p:
            raise ValueError(f"row {i}: empty prompt")
        seq = list(p) + list(r)
        tokens[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        cols = torch.arange(len(p) - 1, len(p) - 1 + t).clamp(max=tokens.size(1) - 2)
        index[i] = cols
        mask[i, :len(r)] = 1.0
    return RolloutBatch(tokens, index, mask, [len(p) for p in prompts], [len(r) for r in responses])


def response_matrix(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    """Per-response values (e.g. the sampler's log-probs) in response
    coordinates [N, width], 0 after each response's end."""
    out = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row {i}: {len(r)} values for at most {width} response tokens")
        if r:
            out[i, :len(r)] = torch.tensor(list(r), dtype=torch.float32)
    return out


def response_logprobs(model, batch: RolloutBatch, *, temperature: float = 1.0,
                      vocab_size: int | None = None) -> torch.Tensor:
    """log pi(o_t | q, o_<t) of every response token, [N, T] (0 on padding).

    Differentiable; through ``generation.token_logprobs`` (megatron-core's
    ``vocab_parallel_cross_entropy``, the same temperature and vocabulary cut
    as the sampler)."""
    dev = platform.device()
    # log-probs from the shortest prompt's last token on: the columns before
    # it are prompt positions no response index points at
    first = min(min(batch.prompt_lens) - 1, batch.tokens.size(1) - 2)
    lp = token_logprobs(model, batch.tokens.to(dev), temperature=temperature, vocab_size=vocab_size,
                        first=first)
    out = lp.gather(1, (batch.index - first).to(dev))
    return out * batch.mask.to(dev)


def layout_logprobs(model, batch: RolloutBatch, packed: packing.PackedBatch | None,
                    **kw) -> torch.Tensor:
    """``response_logprobs`` in the packed layout when ``packed`` is given
    (``packing.packed_logprobs``), in the row layout otherwise."""
    if packed is None:
        return response_logprobs(model, batch, **kw)
    return packing.packed_logprobs(model, packed, **kw)


def response_logprobs_chunked(model, batch: RolloutBatch, chunk: int, *,
                              packed: Sequence | None = None, **kw) -> torch.Tensor:
    """Forward-only log-probs in chunks of ``chunk`` rows (old / reference
    policy); ``packed``: one ``packing.PackedBatch`` or None per chunk
    (``layout_logprobs``), default the row layout throughout.

    The forwards run under ``torch.inference_mode`` (no autograd bookkeeping
    at all); the result is copied out of it by the final ``cat``, so it is an
    ordinary tensor that the loss may use next to differentiable ones."""
    was = model.training
    if was:
        model.eval()
    try:
        with torch.inference_mode():
            parts = [layout_logprobs(model, batch.rows(i, i + chunk),
                                     None if packed is None else packed[k], **kw)
                     for k, i in enumerate(range(0, batch.tokens.size(0), chunk))]
    finally:
        if was:
            model.train(was)
    return torch.cat(parts, 0)


class ReferenceModel:
    """Frozen in-process copy of the policy (pi_ref)."""

    def __init__(self, policy, fresh_model, *, offload: bool = False):
        """``fresh_model``: a model of the policy's architecture and layout
        (built by the same builder); its weights are overwritten here."""
        self.model = fresh_model
        self.parked = None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        # Forward-only log-probs through the module-free path when it supports
        # the model (same logits, measured ~2x faster for small models on CPU).
        self.direct = DirectDecoder(self.model) if direct_by_default(self.model) else None
        self.resets = 0
        self.reset_to(policy)
        self.resets = 0
        # offload: the weights live in (pinned) host memory between passes
        self.parked = ParkedStorage(self.model.parameters()) if offload else None
        if self.parked is not None:
            self.parked.park()

    @contextlib.contextmanager
    def resident(self, *, changed: bool = False):
        """The weights on the device for the ``with`` body; ``changed``: the
        body writes them (the host copy is refreshed when parked again)."""
        if self.parked is None:
            yield self.model
            return
        with self.parked.resident(changed=changed):
            yield self.model

    @torch.no_grad()
    def reset_to(self, policy) -> None:
        """pi_ref <- pi_theta (start of an RL iteration, Algorithm 1 line 3)."""
        src = unwrap(policy).state_dict()
        with self.resident(changed=True):
            dst = self.model.state_dict()
            for k, v in dst.items():
                if torch.is_tensor(v) and k in src and torch.is_tensor(src[k]):
                    v.copy_(src[k].to(v.device))
        self.resets += 1

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch, chunk: int, *, packed: Sequence | None = None,
                 **kw) -> torch.Tensor:
        """pi_ref's response log-probs in chunks of ``chunk`` rows.  Through the
        direct forward, each chunk in the layout ``packed`` gives for it (one
        ``packing.PackedBatch`` or None per chunk, as ``packing.pack_if_cheaper``
        returns them; worked out here when not given); rows go through GPTModel."""
        with self.resident():
            if self.direct is None:
                return response_logprobs_chunked(self.model, batch, chunk, **kw)
            self.direct.bind()
            parts = []
            for k, i in enumerate(range(0, batch.tokens.size(0), chunk)):
                rows = batch.rows(i, i + chunk)
                p = packing.pack_if_cheaper(rows, self.model.config) if packed is None else packed[k]
                parts.append(response_logprobs_chunked(self.model, rows, chunk, **kw) if p is None
                             else packing.packed_direct_logprobs(self.direct, p, **kw))
            return torch.cat(parts, 0)

    def save(self, directory: Path) -> None:
        """pi_ref's weights as a dist checkpoint in ``directory`` (every rank
        calls; written once, loadable at another TP/PP)."""
        with self.resident():
            checkpoint.save_module(self.model, directory)

    @torch.no_grad()
    def load(self, directory: Path) -> None:
        """pi_ref's weights from ``save``'s ``directory``."""
        with self.resident(changed=True):
            checkpoint.load_module(self.model, directory)
