"""HF-named whole tensors of a live, tensor-parallel GPTModel, streamed in
buckets: what an inference engine (``models.vllm_engine``) is refitted from
before every rollout, with no checkpoint written.

Layout.  Each parameter's place in the whole tensor comes from the same
``ShardedTensor`` metadata ``dist_checkpointing`` saves with
(``gpt.sharded_parameters``: global shape and this rank's offset, the SwiGLU
fc1 split into its gate and up halves), so no TP split rule is written twice;
the whole tensors then go through the export's own per-layer mapping
(``to_hf.layer_to_hf``: fused QKV -> q/k/v per query group, fc1 -> gate/up,
vocabulary padding stripped).

Buckets.  Whole layers (and the embedding, final norm and output layer) are
grouped until a bucket holds ``bucket_bytes``; the TP-sharded slices of a
bucket travel in one ``all_gather`` over the tensor-parallel group, and the
bucket's HF tensors are yielded before the next bucket is gathered, so a
rank holds one bucket of whole tensors at a time besides its own shard.
Replicated tensors (norms) are taken from the local copy.  Every rank of a
TP group gets every whole tensor: the engine (vLLM) slices them for its own
tensor parallelism, which need not be the training one.
"""

from __future__ import annotations

from typing import Iterator

import torch

from megatron_dsm.models.gpt import sharded_parameters, unwrap, whole_model_reason
from megatron_dsm.models.hf_convert.hf_config import HFConvertError
from megatron_dsm.models.hf_convert.to_hf import (EMBEDDING_KEY, FINAL_NORM_KEY, LAYER_KEYS,
                                                  OUTPUT_KEY, embedding_to_hf, layer_to_hf,
                                                  output_to_hf)

_SHORT = {key: short for short, key in LAYER_KEYS.items()}
_TOP = (EMBEDDING_KEY, FINAL_NORM_KEY, OUTPUT_KEY)


def _tp_group():
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return 1, None
    return ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_group()


def _units(model) -> list[tuple[object, list]]:
    """(unit, pieces) in model order; a unit is a global layer index or a
    top-level key, a piece a ShardedTensor of this rank."""
    order: dict = {}
    for st in sharded_parameters(model):
        if st.flattened_range is not None:
            raise HFConvertError(f"{st.key}: a flattened shard cannot be refitted from")
        if st.key in _SHORT:
            unit = int(st.global_offset[0])
        elif st.key in _TOP:
            unit = st.key
        else:
            raise HFConvertError(f"no HF mapping for megatron tensor {st.key}")
        order.setdefault(unit, []).append(st)
    return list(order.items())


def _whole(st) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape of the whole tensor, this piece's offset in it), layer axis dropped."""
    pre = st.prepend_axis_num
    return tuple(st.global_shape[pre:]), tuple(st.global_offset[pre:])


def _sharded(st) -> bool:
    return tuple(st.local_shape) != _whole(st)[0]


def hf_weights(model, cfg, *, bucket_bytes: int = 256 * 2**20) -> Iterator[tuple[str, torch.Tensor]]:
    """``(HF name, whole tensor)`` for every weight of ``model`` (this rank's
    shard of a TP-sharded GPTModel, PP=1), bucket by bucket; a collective
    over the TP group: every rank of it iterates to the end."""
    m = unwrap(model)
    why = whole_model_reason(m)
    if why:
        raise HFConvertError(f"cannot refit from this model: {why}")
    tp, group = _tp_group()
    units = _units(m)
    bucket, size = [], 0
    for unit, pieces in units:
        bucket.append((unit, pieces))
        size += sum(_numel(_whole(st)[0]) * st.data.element_size() for st in pieces)
        if size >= bucket_bytes:
            yield from _convert(cfg, _gather(bucket, tp, group))
            bucket, size = [], 0
    if bucket:
        yield from _convert(cfg, _gather(bucket, tp, group))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _region(offset, shape) -> tuple[slice, ...]:
    return tuple(slice(o, o + n) for o, n in zip(offset, shape))


def _all_gather(pieces: list, tp: int, group) -> dict[int, list]:
    """For each TP-sharded piece: (offset, data) of every rank's slice of it,
    all pieces in one flat all-gather (the slices of a tensor have one shape
    on every TP rank, so the flat buffers have one size)."""
    if not pieces:
        return {}
    flat = torch.cat([st.data.detach().reshape(-1) for st in pieces])
    parts = [torch.empty_like(flat) for _ in range(tp)]
    torch.distributed.all_gather(parts, flat, group=group)
    offsets = [None] * tp
    torch.distributed.all_gather_object(offsets, [_whole(st)[1] for st in pieces], group=group)
    out: dict[int, list] = {id(st): [] for st in pieces}
    for part, offs in zip(parts, offsets):
        start = 0
        for st, off in zip(pieces, offs):
            n = st.data.numel()
            out[id(st)].append((off, part[start:start + n].view(st.local_shape)))
            start += n
    return out


def _gather(bucket: list, tp: int, group) -> list[tuple[object, dict]]:
    """(unit, {key: whole tensor}) for a bucket's units."""
    remote = _all_gather([st for _, pieces in bucket for st in pieces if tp > 1 and _sharded(st)],
                         tp, group)
    out = []
    for unit, pieces in bucket:
        whole: dict[str, torch.Tensor] = {}
        for st in pieces:
            shape, off = _whole(st)
            if tuple(st.local_shape) == shape:        # replicated, or TP=1 and unsplit
                whole[st.key] = st.data.detach().view(shape)
                continue
            dest = whole.get(st.key)
            if dest is None:
                dest = whole[st.key] = torch.empty(shape, dtype=st.data.dtype, device=st.data.device)
            for o, t in remote.get(id(st), [(off, st.data.detach())]):
                dest[_region(o, st.local_shape)] = t.view(st.local_shape)
        out.append((unit, whole))
    return out


def _convert(cfg, units: list) -> Iterator[tuple[str, torch.Tensor]]:
    for unit, whole in units:
        if isinstance(unit, int):
            yield from layer_to_hf(cfg, unit, {_SHORT[k]: v for k, v in whole.items()})
        elif unit == EMBEDDING_KEY:
            yield embedding_to_hf(cfg, whole[unit])
        elif unit == FINAL_NORM_KEY:
            yield "model.norm.weight", whole[unit]
        else:
            yield output_to_hf(cfg, whole[unit])
