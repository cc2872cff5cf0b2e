"""Packing samples into contexts of ``seq_length`` tokens (step 6 of the
package docstring): first-fit decreasing, position ids restarting per
sample, and attention isolated per sample by a block-diagonal mask (CPU) or
``cu_seqlens`` (GPU)."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from megatron_dsm.data.sft.examples import Sample, sample_arrays


def pack_ffd(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sample indices per bin, in placement order.

    Samples are taken longest first (ties by index) and each goes into the
    lowest-numbered bin with room.  Bins not yet opened are modelled as bins
    of full capacity after the open ones, so "first bin with room" opens a new
    bin exactly when no open one fits.  A max segment tree over the bins'
    free space answers the query in O(log n).
    """
    lengths = [int(x) for x in lengths]
    for k, n in enumerate(lengths):
        if n <= 0 or n > capacity:
            raise ValueError(f"sample {k} has length {n}; lengths must be in 1..{capacity}")
    if not lengths:
        return []
    size = 1 << max(0, math.ceil(math.log2(len(lengths))))
    tree = [0] * (2 * size)
    for leaf in range(size, size + len(lengths)):
        tree[leaf] = capacity
    for node in range(size - 1, 0, -1):
        tree[node] = max(tree[2 * node], tree[2 * node + 1])
    bins: list[list[int]] = []
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for i in order:
        n = lengths[i]
        node = 1
        while node < size:  # descend to the leftmost leaf with room
            node = 2 * node if tree[2 * node] >= n else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(i)
        tree[node] -= n
        node //= 2
        while node:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    return bins


@dataclasses.dataclass
class Pack:
    """One packed context of ``seq_length`` positions (numpy, label-aligned)."""

    tokens: np.ndarray        # int64 [S]
    labels: np.ndarray        # int64 [S]
    loss_mask: np.ndarray     # uint8 [S]
    position_ids: np.ndarray  # int64 [S], restarts at 0 per sample (and for the padding tail)
    seq_lengths: np.ndarray   # int64 [k] real samples' lengths, in pack order

    @property
    def cu_seqlens(self) -> np.ndarray:
        """int32 [segments+1]: sample boundaries, padding tail as a last segment."""
        segs = list(self.seq_lengths)
        pad = self.tokens.size - int(self.seq_lengths.sum())
        if pad:
            segs.append(pad)
        return np.concatenate([[0], np.cumsum(segs)]).astype(np.int32)


def build_pack(samples: Sequence[Sample], seq_length: int, pad_id: int) -> Pack:
    tok = np.full(seq_length, pad_id, dtype=np.int64)
    lab = np.full(seq_length, pad_id, dtype=np.int64)
    msk = np.zeros(seq_length, dtype=np.uint8)
    pos = np.zeros(seq_length, dtype=np.int64)
    off = 0
    for s in samples:
        t, l, m = sample_arrays(s, pad_id)
        n = t.size
        if off + n > seq_length:
            raise ValueError(f"pack overflow: {off + n} tokens > seq_length {seq_length}")
        tok[off:off + n], lab[off:off + n], msk[off:off + n] = t, l, m
        pos[off:off + n] = np.arange(n)
        off += n
    pos[off:] = np.arange(seq_length - off)
    return Pack(tok, lab, msk, pos, np.asarray([len(s) for s in samples], dtype=np.int64))


def pack_from_arrays(tokens: np.ndarray, loss_mask: np.ndarray, seq_lengths: np.ndarray,
                     seq_length: int, pad_id: int) -> Pack:
    """Rebuild a Pack from stored (unpadded) tokens + loss mask + sample lengths."""
    n = int(tokens.size)
    tok = np.full(seq_length, pad_id, dtype=np.int64)
    lab = np.full(seq_length, pad_id, dtype=np.int64)
    msk = np.zeros(seq_length, dtype=np.uint8)
    pos = np.zeros(seq_length, dtype=np.int64)
    tok[:n] = tokens
    msk[:n] = loss_mask
    off = 0
    for L in seq_lengths:
        L = int(L)
        lab[off:off + L - 1] = tokens[off + 1:off + L]
        pos[off:off + L] = np.arange(L)
        off += L
    pos[off:] = np.arange(seq_length - off)
    return Pack(tok, lab, msk, pos, np.asarray(seq_lengths, dtype=np.int64))


def block_causal_mask(cu_seqlens: Sequence[int] | np.ndarray, seq_length: int) -> torch.Tensor:
    """bool [1, S, S], True = masked: query q may attend key k only when both
    lie in the same segment and k <= q."""
    seg = torch.zeros(seq_length, dtype=torch.long)
    bounds = torch.as_tensor(np.asarray(cu_seqlens)[1:-1], dtype=torch.long)
    if bounds.numel():
        seg[bounds] = 1
    seg = seg.cumsum(0)
    same = seg[:, None] == seg[None, :]
    causal = torch.ones(seq_length, seq_length, dtype=torch.bool).tril()
    return ~(same & causal)[None]


def pack_to_batch(pack: Pack) -> dict:
    """Torch tensors for one pack: tokens, labels, loss_mask (float), position_ids,
    attention_mask (bool [1, S, S]) and cu_seqlens (int32)."""
    cu = pack.cu_seqlens
    return {
        "tokens": torch.from_numpy(pack.tokens),
        "labels": torch.from_numpy(pack.labels),
        "loss_mask": torch.from_numpy(pack.loss_mask.astype(np.float32)),
        "position_ids": torch.from_numpy(pack.position_ids),
        "attention_mask": block_causal_mask(cu, pack.tokens.size),
        "cu_seqlens": torch.from_numpy(cu),
    }


def packed_seq_params(cu_seqlens: torch.Tensor):
    """megatron-core ``PackedSeqParams`` for one pack (micro-batch 1) in THD
    layout, for packed-sequence attention (transformer-engine) on GPU."""
    cu = cu_seqlens.to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max())
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                           max_seqlen_q=max_len, max_seqlen_kv=max_len)


def pack_samples(samples: Sequence[Sample], seq_length: int, seed: int = 0) -> list[list[int]]:
    """FFD bins, then (seed != 0) shuffled so that packs of long samples are
    not all at the start of training."""
    bins = pack_ffd([len(s) for s in samples], seq_length)
    if seed:
        rng = np.random.default_rng(seed)
        bins = [bins[i] for i in rng.permutation(len(bins))]
    return bins
