"""Core attention for the local (non transformer-engine) layer spec.

Why.  megatron-core's ``DotProductAttention`` computes scaled scores with
``baddbmm`` into a scratch buffer, builds a causal mask, fills the masked
scores with -10000, soft-maxes, runs dropout inside an RNG-tracker fork
(which saves and restores the generator state even when the dropout rate
is 0), repeats grouped keys/values to the query heads and multiplies by the
values with ``bmm``.  On a CPU each of those is a dispatch forward and
backward, and the mask fill keeps one more [b*n, s, s] tensor for backward.

``LeanDotProductAttention`` is the same computation with fewer steps: the
causal mask enters the ``baddbmm`` as an additive bias (0 on and below the
diagonal, -inf above; cached per shape), so the scores of attended keys are
bit for bit megatron-core's (``0 + x == x``) and masked keys get probability
exactly 0 as after megatron-core's -10000 fill (``exp(-10000 - max)``
underflows to 0 in fp32); grouped queries are laid out per key group
instead of repeating keys and values; there is no RNG fork without dropout.
``scaled_dot_product_attention`` is not used: at these sizes its CPU flash
kernel costs more than the plain product.  ``benchmarks/train_step_overhead.py``
measures the training step these layers run in.

An explicit boolean mask (GRPO's shared-prompt packing, ``rl/packing.py``;
left-padded batches) enters the same way, as a 0 / -inf bias built once per
mask object: bit for bit megatron-core's outputs and gradients.

Where it is not the same computation, megatron-core's own ``forward`` runs
unchanged: a mask with a query that sees no key (its -10000 fill keeps such
a row finite, with uniform weights), attention dropout in training (the RNG
tracker decides the mask), inputs other than fp32 (megatron-core soft-maxes
half precision in fp32 after a cast), softmax offsets, sliding windows,
query-key layer scaling, attention bias and packed sequences.

``tests/models/test_attention.py`` checks outputs and gradients against
``DotProductAttention`` and that the other cases reach it.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType


class LeanDotProductAttention(DotProductAttention):
    """``DotProductAttention`` with the causal mask folded into the score
    product; same constructor, parameters and checkpoint layout."""

    # (mask, signature, bias) of the last explicit mask seen by any layer: a
    # forward hands the same mask object to every layer
    _last_mask_bias: ClassVar[Optional[tuple]] = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bias: dict = {}

    def _lean_ok(self, query: torch.Tensor, key: torch.Tensor, masked: bool) -> bool:
        sq, sk = query.size(0), key.size(0)
        # without a mask megatron-core masks a causal square block, and
        # nothing for one query (KV-cached decoding); other shapes go to it
        shape_ok = masked or sq == 1 or (sq == sk and self.attn_mask_type == AttnMaskType.causal)
        return (shape_ok
                and query.dtype == torch.float32
                and (self.attention_dropout.p == 0.0 or not self.training)
                and self.softmax_offset is None
                and self.scale_mask_softmax.window_size is None
                and self.scale_mask_softmax.scale is None)

    def _mask_bias(self, mask: torch.Tensor, b: int, ng: int, hpg: int, sq: int, sk: int,
                   like: torch.Tensor) -> Optional[torch.Tensor]:
        """An explicit boolean mask [b or 1, 1, sq, sk] (True = masked) as an
        additive bias [b*ng, hpg*sq, sk] (0 / -inf), or None where megatron-
        core's path must run: another layout, or a query that sees no key
        (megatron-core's -10000 fill gives that row uniform weights and no
        score gradient; -inf would give NaN).  Built once per mask object
        for all layers (``_last_mask_bias``)."""
        # an in-place change of the mask misses the cache (an inference
        # tensor keeps no version counter; generation builds a new mask per step)
        version = -1 if mask.is_inference() else mask._version
        sig = (version, b, ng, hpg, like.dtype, like.device)
        hit = LeanDotProductAttention._last_mask_bias
        if hit is not None and hit[0] is mask and hit[1] == sig:
            return hit[2]
        bias = None
        if (mask.dtype == torch.bool and mask.dim() == 4 and mask.size(1) == 1
                and mask.size(0) in (1, b) and tuple(mask.shape[2:]) == (sq, sk)
                and not bool(mask.all(-1).any())):
            bias = torch.zeros(mask.shape, dtype=like.dtype, device=like.device)
            bias.masked_fill_(mask.to(like.device), float("-inf"))
            bias = bias.expand(b, ng * hpg, sq, sk).reshape(b * ng, hpg * sq, sk)
        LeanDotProductAttention._last_mask_bias = (mask, sig, bias)
        return bias

    def _causal_bias(self, sq: int, sk: int, repeat: int, like: torch.Tensor) -> torch.Tensor:
        key = (sq, sk, repeat, like.dtype, like.device)
        bias = self._bias.get(key)
        if bias is None:
            bias = torch.full((sq, sk), float("-inf"), dtype=like.dtype, device=like.device).triu(1)
            bias = bias.repeat(repeat, 1) if repeat > 1 else bias
            if len(self._bias) > 8:
                self._bias.clear()
            self._bias[key] = bias
        return bias

    def forward(self, query, key, value, attention_mask, attn_mask_type=None,
                attention_bias=None, packed_seq_params=None):
        sq, b, nh, hd = query.shape
        sk, ng = key.size(0), key.size(2)
        hpg = nh // ng
        bias = None
        if attention_mask is not None:
            bias = self._mask_bias(attention_mask, b, ng, hpg, sq, sk, query)
        if (attention_bias is not None or packed_seq_params is not None
                or (attention_mask is not None and bias is None)
                or not self._lean_ok(query, key, attention_mask is not None)):
            return super().forward(query, key, value, attention_mask, attn_mask_type,
                                   attention_bias, packed_seq_params)
        # [sq, b, ng*hpg, hd] -> [b*ng, hpg*sq, hd]: the queries of one key
        # group form one batch entry, so keys/values need no repeat
        q = query.reshape(sq, b, ng, hpg, hd).permute(1, 2, 3, 0, 4).reshape(b * ng, hpg * sq, hd)
        k = key.reshape(sk, b * ng, hd).permute(1, 2, 0)                # [b*ng, hd, sk]
        v = value.reshape(sk, b * ng, hd).transpose(0, 1)               # [b*ng, sk, hd]
        if bias is not None:
            scores = torch.baddbmm(bias, q, k, alpha=self.softmax_scale)
        elif sq > 1:
            scores = torch.baddbmm(self._causal_bias(sq, sk, hpg, q), q, k, alpha=self.softmax_scale)
        else:
            scores = torch.baddbmm(q.new_empty(b * ng, hpg, sk), q, k, beta=0.0,
                                   alpha=self.softmax_scale)
        ctx = torch.bmm(torch.softmax(scores, dim=-1), v)               # [b*ng, hpg*sq, hd]
        # -> [sq, b, nh*hd], heads in megatron-core's order (group-major)
        return ctx.view(b, ng, hpg, sq, hd).permute(3, 0, 1, 2, 4).reshape(sq, b, nh * hd)
