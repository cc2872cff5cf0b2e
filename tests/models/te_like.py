"""A CPU core attention that treats masks as transformer-engine does.

transformer-engine's ``DotProductAttention`` (what megatron-core's
``TEDotProductAttention`` calls) reads ``attention_mask`` only when the mask
type asks for one (``padding``, ``padding_causal``, ``padding_causal_bottom_right``,
``arbitrary``); for ``causal`` it applies its own causal mask (top left
aligned; ``causal_bottom_right`` aligns it to the last key) and for
``no_mask`` every query sees every key, whatever mask is passed.  megatron-
core passes ``causal`` (the layer spec's type) at training and at the
prefill of its static KV cache and ``no_mask`` at decode.  The local spec's
attention honours any boolean mask, so CPU tests cannot see what a GPU run
with the TE spec would do with a padded batch; this module can.

``TELikeCoreAttention`` replaces a local-spec layer's core attention (it has
no parameters, so weights and checkpoints are untouched) and computes
softmax(q k^T * scale) v in fp32, grouped-query heads in megatron-core's
order.  It is not a megatron-core ``DotProductAttention``, so code that
needs an arbitrary mask (rl/packing.py) refuses it as it refuses TE's.
"""
from __future__ import annotations

import torch

USES_MASK = ("padding", "padding_causal", "padding_causal_bottom_right", "arbitrary")


class TELikeCoreAttention(torch.nn.Module):
    def __init__(self, local):
        super().__init__()
        self.attn_mask_type = local.attn_mask_type
        self.softmax_scale = local.softmax_scale
        self.calls: list[str] = []          # mask types seen, for the tests

    def forward(self, query, key, value, attention_mask, attn_mask_type=None,
                attention_bias=None, packed_seq_params=None):
        if attention_bias is not None or packed_seq_params is not None:
            raise NotImplementedError("TELikeCoreAttention: no attention bias or packed sequences")
        kind = (attn_mask_type or self.attn_mask_type).name
        self.calls.append(kind)
        sq, b, nh, hd = query.shape
        sk, ng = key.size(0), key.size(2)
        q = query.permute(1, 2, 0, 3).float()                                  # [b, nh, sq, hd]
        k = key.permute(1, 2, 0, 3).float().repeat_interleave(nh // ng, dim=1)
        v = value.permute(1, 2, 0, 3).float().repeat_interleave(nh // ng, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.softmax_scale     # [b, nh, sq, sk]
        hide = torch.zeros(sq, sk, dtype=torch.bool, device=scores.device)
        if "causal" in kind:
            shift = sk - sq if kind.endswith("bottom_right") else 0
            hide = torch.ones_like(hide).triu(1 + shift)
        hide = hide[None, None]
        if kind in USES_MASK and attention_mask is not None:
            hide = hide | attention_mask.to(torch.bool)
        probs = torch.softmax(scores.masked_fill(hide, float("-inf")), dim=-1)
        out = torch.matmul(probs, v).to(query.dtype)                           # [b, nh, sq, hd]
        return out.permute(2, 0, 1, 3).reshape(sq, b, nh * hd)


def use_te_like_attention(model) -> list[TELikeCoreAttention]:
    """Swap every layer's core attention of ``model`` for the TE-like one."""
    swapped = []
    for layer in model.decoder.layers:
        att = layer.self_attention
        att.core_attention = TELikeCoreAttention(att.core_attention)
        swapped.append(att.core_attention)
    return swapped
