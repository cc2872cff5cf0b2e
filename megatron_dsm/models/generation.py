"""The one generation routine shared by evaluation and GRPO rollouts.

``generate`` samples autoregressively from a megatron-core ``GPTModel`` in
process, with megatron-core's own KV cache: a
``megatron.core.inference.contexts.StaticInferenceContext`` passed as
``inference_context=`` to ``GPTModel.forward``.  The prompt batch is encoded
once (prefill) and each later step feeds one token per row.

Padding.  megatron-core's static KV cache keeps one sequence offset for the
whole batch (a row's RoPE angles and cache columns come from it, not from
``position_ids``), and its attention is told mask type ``causal`` at prefill
and ``no_mask`` at decode.  transformer-engine's attention reads
``attention_mask`` only for ``padding``/``arbitrary`` mask types, so under the
TE spec a padded row would attend its pads, whatever mask is passed.  So
megatron-core never sees a pad here: rows are grouped by exact prompt length
(the G samples of a question share one), each group runs its own cache over
its own columns with no mask at all (``LengthGroups``), and every step runs
each group once and gathers the logits into one batch for the sampler, whose
draws therefore do not depend on the grouping.  A row gets the tokens it
gets alone, under any layer spec.  Cost: one forward per distinct prompt
length per step (per rank: the questions of a GRPO rollout, or the distinct
lengths of an evaluation batch).  The per-step bookkeeping keeps one
left-padded window (generated columns align across rows); the direct engine
(``direct_decode``) computes attention itself, honours its masks and runs
that window as one batch.

Tensor parallelism.  Logits come out vocab-parallel; they are gathered with
``gather_from_tensor_model_parallel_region`` (with the KV cache GPTModel
insists on doing that itself, ``runtime_gather_output=True``, through the
same function inside its output ColumnParallelLinear) and the token chosen on the TP
source rank is broadcast to the TP group, so every TP rank feeds the same
tokens.  Pipeline parallelism is not supported here (PP>1 is refused).

The megatron-core internals this relies on (the static context, its KV
buffers, allocated by this project because megatron-core allocates them on a
CUDA device) are wrapped in ``models.mcore_inference``, checked against the
installed version.

``token_logprobs`` gives per-token log-probabilities (a left-padded batch is
moved to the right first, for the same reason) from vocab-parallel logits through ``tensor_parallel.vocab_parallel_cross_entropy`` (on a clone:
it overwrites its input), with the same temperature and vocab cut as the
sampler, so rollout and training agree.

``RolloutEngine`` is the interface a vLLM or SGLang engine implements later;
``MegatronRolloutEngine`` drives ``GPTModel.forward`` (the ``MegatronStep``
stepper), ``direct_decode.DirectRolloutEngine`` a module-free forward over
the same weights (faster where per-call overhead dominates); both go through
this module's ``generate`` loop, so padding, stops, sampling and TP
broadcast are shared.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import Callable, Optional, Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.models.mcore_inference import StaticKVCache


class GenerationError(ValueError):
    """Bad generation arguments; the message says which and why."""


@dataclasses.dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0          # 0: greedy
    top_p: float = 1.0
    n: int = 1                        # samples per prompt (G)
    stop_ids: tuple[int, ...] = ()    # token ids that end a row (kept in the output)
    stop_strings: tuple[str, ...] = ()  # text that ends a row (needs a decode function)
    seed: int = 0

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise GenerationError(f"n (samples per prompt) must be >= 1, got {self.n}")


@dataclasses.dataclass
class GenerationOutput:
    """One row per (prompt, sample), prompt-major: row ``i * n + j`` is sample
    ``j`` of prompt ``i``."""

    prompts: list[list[int]]          # prompt ids per row
    completions: list[list[int]]      # generated ids per row, cut after the stop
    logprobs: list[list[float]]       # log-prob of each generated id under the sampler
    finished: list[bool]              # True if a stop id / string ended the row
    new_tokens: int                   # tokens generated, all rows (pads after a stop excluded)
    seconds: float
    steps: int = 0                    # decoding steps run (forward passes)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _check_pp() -> None:
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized() and ps.get_pipeline_model_parallel_world_size() > 1:
        raise GenerationError("in-process generation supports pipeline parallel size 1 only "
                              f"(got PP={ps.get_pipeline_model_parallel_world_size()})")


def _tp_size() -> int:
    from megatron.core import parallel_state as ps

    return ps.get_tensor_model_parallel_world_size() if ps.model_parallel_is_initialized() else 1


def ragged_from_padded(tokens: torch.Tensor, lengths: Sequence[int],
                       padding_side: str = "right") -> list[list[int]]:
    """Rows of a padded [b, s] batch, given each row's real length."""
    if padding_side not in ("left", "right"):
        raise GenerationError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if tokens.dim() != 2 or tokens.size(0) != len(lengths):
        raise GenerationError(f"tokens must be [batch, seq] with one length per row; got "
                              f"{tuple(tokens.shape)} and {len(lengths)} lengths")
    s = tokens.size(1)
    rows = []
    for r, n in zip(tokens.tolist(), lengths):
        if not 0 < n <= s:
            raise GenerationError(f"row length {n} outside 1..{s}")
        rows.append(r[:n] if padding_side == "right" else r[s - n:])
    return rows


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, dev: torch.device):
    """[b, s] tokens left-padded with ``pad_id`` and a [b, s] bool mask of real tokens."""
    s = max(len(r) for r in rows)
    toks = torch.full((len(rows), s), pad_id, dtype=torch.long)
    real = torch.zeros((len(rows), s), dtype=torch.bool)
    for i, r in enumerate(rows):
        if len(r):
            toks[i, s - len(r):] = torch.tensor(list(r), dtype=torch.long)
            real[i, s - len(r):] = True
    return toks.to(dev), real.to(dev)


def attention_mask(real: torch.Tensor, q_len: int) -> torch.Tensor:
    """megatron-core boolean mask [b, 1, q_len, k_len] (True = masked) for the
    last ``q_len`` queries over keys ``real`` [b, k_len]: causal and no pads."""
    k_len = real.size(1)
    q_pos = torch.arange(k_len - q_len, k_len, device=real.device)
    k_pos = torch.arange(k_len, device=real.device)
    causal = k_pos[None, :] > q_pos[:, None]                    # [q, k]
    return (causal[None, None] | ~real[:, None, None, :])


def _mask_vocab_(logits: torch.Tensor, vocab_size: Optional[int], offset: int = 0) -> torch.Tensor:
    """Exclude padded vocabulary entries (global id >= vocab_size)."""
    if vocab_size is None:
        return logits
    ids = torch.arange(offset, offset + logits.size(-1), device=logits.device)
    return logits.masked_fill(ids >= vocab_size, float("-inf"))


def gather_logits(vocab_parallel_logits: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits on every TP rank."""
    if _tp_size() == 1:
        return vocab_parallel_logits
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    return gather_from_tensor_model_parallel_region(vocab_parallel_logits)


def _broadcast_tp(t: torch.Tensor) -> torch.Tensor:
    """The TP source rank's tensor on every rank of its TP group."""
    if _tp_size() == 1:
        return t
    from megatron.core import parallel_state as ps

    torch.distributed.broadcast(t, src=ps.get_tensor_model_parallel_src_rank(),
                                group=ps.get_tensor_model_parallel_group())
    return t


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens [b] and their log-probs under the (tempered, nucleus-cut)
    distribution; greedy when temperature is 0 (log-prob then at temperature 1)."""
    logits = logits.float()
    if temperature == 0.0:
        tok = logits.argmax(-1)
        lp = torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1)
        return tok, lp
    # x / 1.0 == x exactly: skip the division (one op per step) at temperature 1
    logp = torch.log_softmax(logits / temperature if temperature != 1.0 else logits, -1)
    if top_p < 1.0:
        sorted_lp, order = logp.sort(-1, descending=True)
        probs = sorted_lp.exp()
        before = probs.cumsum(-1) - probs        # mass strictly above each token
        sorted_lp = sorted_lp.masked_fill(before >= top_p, float("-inf"))
        logp = torch.full_like(logp, float("-inf")).scatter(-1, order, sorted_lp)
        logp = torch.log_softmax(logp, -1)
    tok = draw_categorical(logp.exp(), generator)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def draw_categorical(probs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One index per row of ``probs`` [b, v] (rows need not sum to 1), drawn
    by inverting the cumulative distribution with one uniform per row.

    Why not ``torch.multinomial``: on CPU it draws an exponential variate for
    every vocabulary entry, the largest single op of a small
    model's decode step; one uniform per row and a search cost far less.
    Zero-probability entries (masked vocabulary, nucleus cut) have
    empty intervals and are never drawn; a uniform that rounds up to the
    total lands on the last entry with non-zero mass."""
    c = probs.cumsum(-1)
    total = c[:, -1:].contiguous()
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=probs.dtype) * total
    first_full = torch.searchsorted(c, total, right=False)      # last entry with mass
    return torch.minimum(torch.searchsorted(c, u, right=True), first_full).squeeze(-1)


def _hits_stop(text: str, stops: Sequence[str]) -> bool:
    return any(s in text for s in stops)


def _model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


# ---------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------


class MegatronStep:
    """One forward of megatron-core's ``GPTModel`` per decoding step for rows
    of one prompt length (``LengthGroups``: nothing is padded), with its
    static KV cache (``mcore_inference.StaticKVCache``), or, ``use_cache=False``,
    the whole window recomputed: the reference the cache is tested against."""

    def __init__(self, model, b: int, total: int, dev, use_cache: bool = True):
        self.model = model
        self.positions = torch.arange(total, device=dev)[None].expand(b, -1)
        self.cache = StaticKVCache(model, b, total, _model_dtype(model)) if use_cache else None

    def __call__(self, inp: torch.Tensor, start: int, real=None, need_mask: bool = False):
        pos = self.positions[:, start:start + inp.size(1)]
        if self.cache is None:
            return gather_logits(self.model(inp, pos, None)[:, -1, :])
        return self.cache.forward(inp, pos)                             # [b, v]


class LengthGroups:
    """The stepper of a left-padded window whose rows have prompts of several
    lengths: one inner stepper per length over its rows' own columns (a
    group of length n starts at window column ``s0 - n``), so no inner
    stepper sees a pad (module docstring: Padding).  ``make(b, total, dev)``
    builds an inner stepper; each call runs every group and returns the
    logits of all rows in window order."""

    def __init__(self, make: Callable, lengths: Sequence[int], s0: int, total: int, dev):
        rows: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            rows.setdefault(n, []).append(i)
        self.b = len(lengths)
        self.groups = [(torch.tensor(r, device=dev) if len(rows) > 1 else None, s0 - n,
                        make(len(r), total - (s0 - n), dev)) for n, r in rows.items()]

    def __call__(self, inp: torch.Tensor, start: int, real=None, need_mask: bool = False):
        out = None
        for idx, off, step in self.groups:
            x = inp if idx is None else inp.index_select(0, idx)
            # the first call (and every call without a cache) reads from column 0
            logits = step(x[:, off:], 0) if start == 0 else step(x, start - off)
            if idx is None:
                return logits
            if out is None:
                out = logits.new_empty(self.b, logits.size(-1))
            out.index_copy_(0, idx, logits)
        return out


@torch.inference_mode()
def generate(model, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
             pad_id: int = 0, vocab_size: Optional[int] = None,
             decode: Optional[Callable[[list[int]], str]] = None,
             use_cache: bool = True, stepper: Optional[Callable] = None) -> GenerationOutput:
    """Sample ``params.n`` completions for each prompt (token id lists).

    ``vocab_size`` excludes padded vocabulary entries; ``decode`` turns ids
    into text for stop strings.  ``use_cache=False`` recomputes the whole
    sequence every step (the reference the KV cache is tested against).
    ``stepper(b, total, device)`` builds the per-step forward over the
    left-padded window (default: ``MegatronStep`` per prompt length through
    ``LengthGroups``; ``direct_decode.DirectStep`` is the module-free one,
    which masks pads itself): called as ``step(new_tokens [b, q],
    start_column, real [b, start+q], need_mask)`` it returns full-vocabulary
    logits [b, v] of the last column.

    Per-step bookkeeping is kept off the critical path: token and real-token
    buffers are allocated once for the whole ``[b, prompt + max_new_tokens]``
    window and each step writes one column and reads views; the only host
    sync per step is the count of finished rows (to stop early).  The model
    sees exactly the inputs of a plain step-by-step loop, so the tokens
    sampled for a seed do not depend on it.
    """
    _check_request(model, prompts, params, decode)
    dev = platform.device()
    state = _DecodeState.prefill(prompts, params, pad_id, dev)
    gen = None
    if params.temperature > 0:
        gen = torch.Generator(device=dev).manual_seed(params.seed)
    was_training = model.training
    model.eval()
    platform.synchronize()
    t0 = time.perf_counter()
    forward = _build_stepper(model, stepper, use_cache, state, dev)
    steps = 0
    try:
        for step in range(params.max_new_tokens):
            cur = state.s0 + step                     # tokens so far
            start = cur - 1 if (use_cache and step > 0) else 0
            logits = forward(state.tokens[:, start:cur], start, state.real[:, :cur],
                             state.left_padded or state.n_done > 0)
            nxt, lp = _sample(logits, params, vocab_size, gen)
            steps += 1
            if state.record(step, nxt, lp, params.stop_strings, decode):
                break
    finally:
        if was_training:
            model.train()
    platform.synchronize()
    return state.output(steps, time.perf_counter() - t0)


def _check_request(model, prompts: Sequence[Sequence[int]], params: SamplingParams,
                   decode: Optional[Callable]) -> None:
    params.validate()
    _check_pp()
    if not prompts:
        raise GenerationError("no prompts given")
    if any(len(p) == 0 for p in prompts):
        raise GenerationError("every prompt needs at least one token")
    if params.stop_strings and decode is None:
        raise GenerationError("stop strings need a decode function")
    if getattr(getattr(model, "config", None), "sequence_parallel", False):
        raise GenerationError("generation needs sequence_parallel off (one new token per step "
                              "cannot be split over TP ranks); build the sampling model without it")


def _build_stepper(model, stepper: Optional[Callable], use_cache: bool, state: "_DecodeState", dev):
    if stepper is None:
        return LengthGroups(lambda b, total, d: MegatronStep(model, b, total, d, use_cache),
                            [len(r) for r in state.rows], state.s0, state.total, dev)
    if not use_cache:
        raise GenerationError("use_cache=False applies to the megatron-core stepper only")
    return stepper(state.b, state.total, dev)


def _sample(logits: torch.Tensor, params: SamplingParams, vocab_size: Optional[int],
            gen: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens and their log-probs, the TP source rank's on every TP rank."""
    if vocab_size is not None and vocab_size < logits.size(-1):
        logits = _mask_vocab_(logits, vocab_size)
    nxt, lp = sample_next(logits, params.temperature, params.top_p, gen)
    return _broadcast_tp(nxt.contiguous()), _broadcast_tp(lp.contiguous())


@dataclasses.dataclass
class _DecodeState:
    """Whole-window buffers of one ``generate`` call: column ``s0 + j`` holds
    generated token ``j``; a generated column stays "real" until its row has
    finished (then it holds a pad)."""

    rows: list[list[int]]       # prompt ids per row
    tokens: torch.Tensor        # [b, total] long
    real: torch.Tensor          # [b, total] bool
    out_lp: torch.Tensor        # [b, max_new_tokens] float32
    done: torch.Tensor          # [b] bool: row has stopped
    finished: torch.Tensor      # [b] bool: a stop id / string ended the row
    stop_ids: torch.Tensor      # [k] long ([-1] when none)
    pad_id: int
    s0: int                     # prompt columns (longest prompt)
    left_padded: bool           # some prompt is shorter than s0
    n_done: int = 0

    @classmethod
    def prefill(cls, prompts, params: SamplingParams, pad_id: int, dev) -> "_DecodeState":
        rows = [list(p) for p in prompts for _ in range(params.n)]
        prompt_tokens, prompt_real = left_pad(rows, pad_id, dev)
        b, s0 = prompt_tokens.shape
        total = s0 + params.max_new_tokens
        tokens = torch.full((b, total), pad_id, dtype=torch.long, device=dev)
        tokens[:, :s0] = prompt_tokens
        real = torch.ones((b, total), dtype=torch.bool, device=dev)
        real[:, :s0] = prompt_real
        out_lp = torch.zeros((b, params.max_new_tokens), dtype=torch.float32, device=dev)
        stop_ids = torch.tensor(sorted(set(params.stop_ids)) or [-1], device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        finished = torch.zeros(b, dtype=torch.bool, device=dev)
        return cls(rows, tokens, real, out_lp, done, finished, stop_ids, pad_id, s0,
                   left_padded=any(len(r) < s0 for r in rows))

    @property
    def b(self) -> int:
        return self.tokens.size(0)

    @property
    def total(self) -> int:
        return self.tokens.size(1)

    def record(self, step: int, nxt: torch.Tensor, lp: torch.Tensor, stop_strings: Sequence[str],
               decode: Optional[Callable]) -> bool:
        """Write generated column ``step`` and mark rows that stop; True once all have."""
        cur = self.s0 + step
        if self.n_done:
            nxt = torch.where(self.done, torch.full_like(nxt, self.pad_id), nxt)
            self.real[:, cur] = ~self.done
        self.tokens[:, cur] = nxt
        self.out_lp[:, step] = lp
        hit = torch.isin(nxt, self.stop_ids)
        if self.n_done:
            hit &= ~self.done
        if stop_strings:
            # a running row's generated tokens are all real
            for i in (~self.done & ~hit).nonzero().flatten().tolist():
                if _hits_stop(decode(self.tokens[i, self.s0:cur + 1].tolist()), stop_strings):
                    hit[i] = True
        self.finished |= hit
        self.done |= hit
        self.n_done = int(self.done.sum())
        return self.n_done == self.b

    def output(self, steps: int, seconds: float) -> GenerationOutput:
        end = self.s0 + steps
        lengths = self.real[:, self.s0:end].sum(1).tolist()
        gen_tokens = self.tokens[:, self.s0:end].tolist()
        gen_lp = self.out_lp[:, :steps].tolist()
        completions = [t[:n] for t, n in zip(gen_tokens, lengths)]
        logprobs = [lp[:n] for lp, n in zip(gen_lp, lengths)]
        return GenerationOutput(prompts=self.rows, completions=completions, logprobs=logprobs,
                                finished=self.finished.tolist(), new_tokens=sum(lengths),
                                seconds=seconds, steps=steps)


def cut_at_stop_string(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) its earliest stop string."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


# ---------------------------------------------------------------------------
# log-probs
# ---------------------------------------------------------------------------


def token_logprobs(model, tokens: torch.Tensor, *, temperature: float = 1.0,
                   real: Optional[torch.Tensor] = None,
                   vocab_size: Optional[int] = None, first: int = 0) -> torch.Tensor:
    """log p(tokens[:, t+1] | tokens[:, :t+1]) for t = first..s-2, shape [b, s-1-first].

    ``first`` skips the cross entropy for positions nobody reads, e.g. the
    prompt of a rollout batch.

    Differentiable (GRPO trains through it).  ``real`` [b, s] marks real
    tokens when the batch is padded; right padding needs none (pads only
    follow real tokens, and causal attention never reads them).  A
    left-padded batch is moved to the right for the forward and back, so
    that no real token attends a pad under any layer spec (the module
    docstring says why a mask is not enough); columns whose context is only
    pads are 0.  ``temperature`` divides the logits as the sampler does;
    ``vocab_size`` excludes padded vocabulary entries as the sampler does.
    """
    _check_pp()
    if temperature <= 0:
        raise GenerationError(f"log-prob temperature must be > 0, got {temperature}")
    if tokens.dim() != 2 or tokens.size(1) < 2:
        raise GenerationError(f"tokens must be [batch, seq>=2], got {tuple(tokens.shape)}")
    b, s = tokens.shape
    if not 0 <= first <= s - 2:
        raise GenerationError(f"first must be in 0..{s - 2} for {s} tokens, got {first}")
    lead = None
    if real is not None:
        if real.shape != tokens.shape:
            raise GenerationError(f"real mask {tuple(real.shape)} does not match tokens {tuple(tokens.shape)}")
        lead = _leading_pads(real.to(tokens.device, torch.bool))
    if lead is not None:      # left padded: roll each row's pads to its end
        cols = torch.arange(s, device=tokens.device)
        tokens = tokens.gather(1, (cols[None] + lead[:, None]) % s)
    pos = torch.arange(s, device=tokens.device)[None].expand(b, -1)
    start = 0 if lead is not None else first
    logits = model(tokens, pos, None)[:, start:-1]                 # [b, s, v/tp] -> positions kept
    lp = logprobs_of_targets(logits, tokens[:, start + 1:], temperature=temperature,
                             vocab_size=vocab_size)
    if lead is None:
        return lp
    # back to the caller's columns: column c predicted token c+1 from rolled column c - lead
    back = torch.arange(first, s - 1, device=lp.device)[None] - lead[:, None]
    return lp.gather(1, back.clamp(min=0)).masked_fill(back < 0, 0.0)


def _leading_pads(real: torch.Tensor) -> Optional[torch.Tensor]:
    """Pads before each row's first real token [b], or None when no row has
    any; one clear error when a row has a pad between real tokens."""
    lead = (~real).int().cumprod(1).sum(1)
    n = real.sum(1)
    cols = torch.arange(real.size(1), device=real.device)[None]
    block = (cols >= lead[:, None]) & (cols < (lead + n)[:, None])
    if not torch.equal(block, real):
        row = int((block != real).any(1).nonzero()[0])
        raise GenerationError(f"row {row} of the real-token mask has a pad between real tokens; "
                              "give left- or right-padded rows")
    return lead if bool(lead.any()) else None


def logprobs_of_targets(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
                        vocab_size: Optional[int] = None) -> torch.Tensor:
    """log-softmax(logits / temperature)[target] for vocab-parallel ``logits``
    [b, s, v/tp] and ``targets`` [b, s], through megatron-core's
    ``vocab_parallel_cross_entropy`` (padded vocabulary entries excluded as
    the sampler excludes them); [b, s]."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    logits = logits.transpose(0, 1).float()                        # [s, b, v/tp]
    if temperature != 1.0:
        logits = logits / temperature
    if vocab_size is not None:
        part = logits.size(-1)
        rank = ps.get_tensor_model_parallel_rank() if ps.model_parallel_is_initialized() else 0
        if vocab_size < (rank + 1) * part:      # this shard holds padded entries
            logits = _mask_vocab_(logits, vocab_size, offset=rank * part)
    target = targets.transpose(0, 1).contiguous()
    # clone: vocab_parallel_cross_entropy overwrites its logits argument (and
    # views it, so the copy is laid out contiguously whatever came before).
    nll = tensor_parallel.vocab_parallel_cross_entropy(
        logits.clone(memory_format=torch.contiguous_format), target)
    return -nll.transpose(0, 1)


# ---------------------------------------------------------------------------
# the rollout-engine interface
# ---------------------------------------------------------------------------


class RolloutEngine(abc.ABC):
    """Token-level sampling for GRPO and evaluation.  A vLLM or SGLang back
    end implements the same two methods (and syncs weights in
    ``update_weights``)."""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> GenerationOutput:
        ...

    def update_weights(self, model) -> None:
        """Make the engine sample from ``model``'s current weights."""


class MegatronRolloutEngine(RolloutEngine):
    """Samples in process from the live megatron-core model (weights are
    shared, so ``update_weights`` only swaps the model reference)."""

    def __init__(self, model, *, pad_id: int = 0, vocab_size: Optional[int] = None,
                 decode: Optional[Callable[[list[int]], str]] = None):
        from megatron_dsm.models.gpt import unwrap

        self.model = unwrap(model)
        self.pad_id, self.vocab_size, self.decode = pad_id, vocab_size, decode
        self.last_tokens_per_second = 0.0

    def update_weights(self, model) -> None:
        from megatron_dsm.models.gpt import unwrap

        self.model = unwrap(model)

    def generate(self, prompts, params):
        out = generate(self.model, prompts, params, pad_id=self.pad_id,
                       vocab_size=self.vocab_size, decode=self.decode)
        self.last_tokens_per_second = out.tokens_per_second
        return out
