"""Shared-prompt packing: the policy's training forward runs each distinct
prompt of a micro-batch once.

Why.  The G samples of a GRPO group share their question.  The row layout
of ``rollout.RolloutBatch`` ([N, prompt + response]) pushes that prompt G
times through the policy's forward and backward.  Here the rows of a
micro-batch that share a prompt become one sequence: the prompt, then one
segment per row holding the row's response *inputs* (every response token
but the last, which predicts nothing).  In the benchmark's shape (11-token
prompt, G = 8, 16 new tokens) that is 11 + 8 x 15 = 131 token positions
instead of 8 x 27 = 216.

Exactness.  Nothing is approximated; the logits are the row layout's up to
float summation order:

- attention: a segment's tokens see the prompt and, causally, their own
  segment, nothing of the other segments (``attention_mask``);
- positions: RoPE angles come from each token's position *in its own row*
  (prompt token i -> i, segment token j -> P + j), through ``rope_positions``;
  prompts of different lengths are left-padded to the longest (pads are
  masked keys; RoPE depends on relative positions only, so the shift
  changes no score);
- gradients: the prompt's keys and values receive the sum over the G rows,
  which the row layout also forms (inside the weight-gradient products).

The frozen reference uses the same layout through the module-free
``direct_decode.DirectDecoder`` (``packed_direct_logprobs``: one forward
instead of a prompt prefill, a key/value copy to the G rows and a second
forward).

``tests/rl/test_packing.py`` checks log-probs and parameter gradients
against the row layout (fp32, 1e-5), at TP=1 here and under torchrun at
TP=2 (``gen_worker``).

Cost.  ``cheaper_than_rows`` keeps the row layout for a micro-batch whose
packed attention squares would cost more than the prompt copies they save.

Scope.  The local layer spec's attention (megatron-core's
``DotProductAttention`` or ``models.attention.LeanDotProductAttention``,
which take an arbitrary boolean mask), RoPE, PP=1, no sequence or context
parallelism.  ``unsupported_reason`` names the first setting outside that;
the RL loop then keeps the row layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Optional

import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention

from megatron_dsm import platform
from megatron_dsm.models.generation import logprobs_of_targets
from megatron_dsm.models.gpt import unwrap, whole_model_reason

if TYPE_CHECKING:   # rollout.py imports this module
    from megatron_dsm.rl.rollout import RolloutBatch


@dataclasses.dataclass
class PackedBatch:
    tokens: torch.Tensor        # [U, L] one sequence per distinct prompt
    positions: torch.Tensor     # [L] each column's position in its own row (the same for every sequence)
    attn_mask: torch.Tensor     # [U, 1, L, L] bool, True = masked (megatron-core's convention)
    where: torch.Tensor         # [N, T] flat index into [U * L] of the logits predicting each response token
    targets: torch.Tensor       # [N, T] response tokens (garbage past a row's length)
    mask: torch.Tensor          # [N, T] float, 1 on real response tokens


def unsupported_reason(model) -> Optional[str]:
    """None when ``packed_logprobs`` reproduces the row layout for this model."""
    why = whole_model_reason(model)
    if why:
        return why
    for layer in unwrap(model).decoder.layers:
        core = getattr(getattr(layer, "self_attention", None), "core_attention", None)
        if not isinstance(core, DotProductAttention):
            return (f"core attention {type(core).__name__} (packing needs an arbitrary mask: "
                    f"the local spec's DotProductAttention)")
    return None


def pack_shared_prompts(batch: RolloutBatch) -> PackedBatch:
    """The packed layout of ``batch``'s rows (see the module docstring).

    Built as Python lists and converted once (it runs every micro-batch, on
    the training step's critical path)."""
    n, t = batch.mask.shape
    rows = batch.tokens.tolist()
    groups: dict[tuple, list[int]] = {}
    for i, (row, p) in enumerate(zip(rows, batch.prompt_lens)):
        groups.setdefault(tuple(row[:p]), []).append(i)
    p_max = max(len(p) for p in groups)
    seg = max(0, max(batch.response_lens) - 1)             # input columns per segment
    c_max = max(len(v) for v in groups.values())
    length = p_max + c_max * seg
    tokens, seg_ids = [], []             # per sequence; seg id 0 prompt, c + 1 segment c, -1 pad
    where, targets = [[0] * t for _ in range(n)], [[0] * t for _ in range(n)]
    for g, (prompt, members) in enumerate(groups.items()):
        pad = p_max - len(prompt)
        tok, sid = [0] * pad + list(prompt), [-1] * pad + [0] * len(prompt)
        last_prompt = g * length + p_max - 1
        for c, i in enumerate(members):
            p, r = batch.prompt_lens[i], batch.response_lens[i]
            resp = rows[i][p:p + r]
            inputs = resp[:-1]
            tok += inputs + [0] * (seg - len(inputs))
            sid += [c + 1] * len(inputs) + [-1] * (seg - len(inputs))
            targets[i][:r] = resp
            # token 0 from the prompt's last column, token j >= 1 from input j - 1
            # of the segment; columns past the response repeat a valid index
            first = g * length + p_max + c * seg
            where[i] = [last_prompt] + [first + min(j, max(r - 2, 0)) if r > 1 else last_prompt
                                        for j in range(t - 1)]
        tokens.append(tok + [0] * (length - len(tok)))
        seg_ids.append(sid + [-1] * (length - len(sid)))
    positions = list(range(p_max)) + [p_max + j for _ in range(c_max) for j in range(seg)]
    return PackedBatch(torch.tensor(tokens), torch.tensor(positions),
                       attention_mask(torch.tensor(seg_ids)), torch.tensor(where),
                       torch.tensor(targets), batch.mask.clone())


def pack_if_cheaper(batch: RolloutBatch, config) -> Optional[PackedBatch]:
    """``batch``'s packed layout where it costs less than its rows
    (``cheaper_than_rows``), else None (keep the row layout)."""
    packed = pack_shared_prompts(batch)
    return packed if cheaper_than_rows(packed, batch, config) else None


def cheaper_than_rows(packed: PackedBatch, batch: RolloutBatch, config) -> bool:
    """Whether the packed layout of ``batch`` takes fewer multiply-adds than
    its row layout for a model of this shape (``config``: a TransformerConfig).

    Packing removes G - 1 copies of the prompt from every linear layer, but
    its attention is one [L, L] square per sequence instead of G small ones,
    and for long responses behind a short prompt the square outgrows the
    saving (8 responses of 1,024 tokens behind a 300-token prompt on the 7B
    shape: 2.31e12 against 2.26e12 for rows).  Per layer and token the
    linear layers take about 4h^2 + 3h*ffn (QKV, projection, SwiGLU), per
    query-key pair the attention 2h (scores, then the value product; the
    lean attention computes the whole square)."""
    h, f = config.hidden_size, config.ffn_hidden_size
    per_token, per_pair = 4 * h * h + 3 * h * f, 2 * h
    u, length = packed.tokens.shape
    n, s = batch.tokens.shape
    packed_cost = u * length * (per_token + length * per_pair)
    return packed_cost < n * s * (per_token + s * per_pair)


def attention_mask(seg_id: torch.Tensor) -> torch.Tensor:
    """[U, 1, L, L] True = masked, from per-column segment ids [U, L] (0 prompt,
    c > 0 a segment, -1 padding): a real query sees earlier prompt columns
    and earlier columns of its own segment; every query also sees itself, so
    no softmax row is empty."""
    length = seg_id.size(1)
    q, k = seg_id[:, :, None], seg_id[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    visible = causal & (q >= 0) & (k >= 0) & ((k == 0) | (k == q))
    visible |= torch.eye(length, dtype=torch.bool)
    return ~visible[:, None]


@contextlib.contextmanager
def rope_positions(model, positions: torch.Tensor):
    """RoPE angles of ``positions`` [L] for the forwards inside the block.

    Why: ``GPTModel.forward`` takes its RoPE angles from
    ``rotary_pos_emb(sequence length)``, i.e. positions 0..L-1 (its
    ``position_ids`` feed learned absolute embeddings only).  The angles of
    the wanted positions are rows of that same table, so the instance's
    ``forward`` hands them out for the duration of the block (autograd keeps
    what it needs; nothing is recomputed in the backward)."""
    rope = unwrap(model).rotary_pos_emb
    table = rope(int(positions.max()) + 1)                          # [n, 1, 1, d]
    emb = table.index_select(0, positions.to(table.device))
    rope.forward = lambda *args, **kwargs: emb
    try:
        yield
    finally:
        del rope.forward


def packed_logprobs(model, packed: PackedBatch, **kw) -> torch.Tensor:
    """log pi(o_t | q, o_<t) of every response token, [N, T] (0 on padding):
    ``rollout.response_logprobs`` for the packed layout, through
    ``GPTModel.forward`` (differentiable; ``kw``: temperature, vocab_size)."""
    dev = platform.device()
    tokens = packed.tokens.to(dev)
    pos = packed.positions.to(dev)
    with rope_positions(model, pos):
        logits = model(tokens, pos[None].expand(tokens.size(0), -1), packed.attn_mask.to(dev))
    return _response_logprobs(logits, packed, **kw)


@torch.inference_mode()
def packed_direct_logprobs(decoder, packed: PackedBatch, **kw) -> torch.Tensor:
    """``packed_logprobs`` through a forward-only ``direct_decode.DirectDecoder``
    (the frozen reference's path; an inference tensor: ``ReferenceModel``
    copies it out with its ``cat``)."""
    dev = platform.device()
    logits = decoder.packed_logits(packed.tokens.to(dev), packed.positions.to(dev),
                                   ~packed.attn_mask.to(dev))
    return _response_logprobs(logits, packed, **kw)


def _response_logprobs(logits: torch.Tensor, packed: PackedBatch, *, temperature: float = 1.0,
                       vocab_size: int | None = None) -> torch.Tensor:
    """Each response token's log-prob from packed logits [U, L, v/tp], through
    megatron-core's ``vocab_parallel_cross_entropy``; 0 on padding."""
    dev = logits.device
    u, length = logits.shape[:2]
    n, t = packed.where.shape
    picked = logits.reshape(u * length, -1).index_select(0, packed.where.to(dev).flatten())
    lp = logprobs_of_targets(picked.view(n, t, -1), packed.targets.to(dev),
                             temperature=temperature, vocab_size=vocab_size)
    return lp * packed.mask.to(dev)
