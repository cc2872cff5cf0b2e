"""This project's dist checkpoint -> an HF directory (safetensors + config.json).

Export reads the dist checkpoint one layer at a time (regions naming one
layer of the stacked layer axis) and writes safetensors shards as they fill,
whatever TP/PP layout saved it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from megatron_dsm import checkpoint
from megatron_dsm.io import write_json
from megatron_dsm.models import config as model_config
from megatron_dsm.models.hf_convert.hf_config import HFConvertError, hf_config_from_model

# checkpoint keys of one layer's tensors (stacked over layers), by short name;
# both specs save under these (the local spec maps its norms onto them)
LAYER_KEYS = {
    "ln1": "decoder.layers.self_attention.linear_qkv.layer_norm_weight",
    "ln2": "decoder.layers.mlp.linear_fc1.layer_norm_weight",
    "qkv": "decoder.layers.self_attention.linear_qkv.weight",
    "proj": "decoder.layers.self_attention.linear_proj.weight",
    "fc1": "decoder.layers.mlp.linear_fc1.weight",
    "fc2": "decoder.layers.mlp.linear_fc2.weight",
}
EMBEDDING_KEY = "embedding.word_embeddings.weight"
FINAL_NORM_KEY = "decoder.final_layernorm.weight"
OUTPUT_KEY = "output_layer.weight"


class _RegionPlanner(DefaultLoadPlanner):
    """A torch.distributed.checkpoint LoadPlanner that reads only the given
    regions: ``{key: (offsets, destination tensor)}``.

    Why not ``dist_checkpointing.load`` with one layer's ShardedTensor: its
    torch_dist path rebuilds a torch ShardedTensor from all fragments of the
    key and refuses a partial one.  The stored chunks are per layer (and per
    saving TP rank), so a region read touches one layer's bytes only.
    """

    def __init__(self, regions: dict):
        super().__init__()
        self.regions = regions

    def create_local_plan(self):
        items = []
        for key, (offsets, dest) in self.regions.items():
            md = self.metadata.state_dict_metadata.get(key)
            if md is None:
                raise HFConvertError(f"checkpoint has no tensor {key}")
            chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=dest.size())
            items += create_read_items_for_chunk_list(key, md, [chunk])
        return LoadPlan(items)

    def resolve_tensor(self, read_item):
        dest = self.regions[read_item.dest_index.fqn][1]
        return narrow_tensor_by_index(dest, read_item.dest_offsets, read_item.lengths)

    def commit_tensor(self, read_item, tensor):
        return None


def _load_slices(ckpt: Path, specs: dict, meta: dict) -> dict:
    """Load ``{out: (key, layer)}`` from the dist checkpoint: the whole tensor
    (layer None), or layer ``layer`` of a stacked (L, ...) tensor."""
    regions, out = {}, {}
    for name, (key, layer) in specs.items():
        md = meta.get(key)
        if md is None:
            raise HFConvertError(f"{ckpt}: checkpoint has no tensor {key}")
        shape = list(md.size)
        if layer is None:
            dest = torch.empty(shape, dtype=md.properties.dtype)
            regions[key] = ([0] * len(shape), dest)
        else:
            dest = torch.empty([1] + shape[1:], dtype=md.properties.dtype)
            regions[key] = ([layer] + [0] * (len(shape) - 1), dest)
        out[name] = dest if layer is None else dest[0]
    dcp.load({k: v[1] for k, v in regions.items()},
             storage_reader=dcp.FileSystemReader(str(ckpt)),
             planner=_RegionPlanner(regions), no_dist=True)
    return out


class _ShardWriter:
    """Accumulates tensors and writes a safetensors shard when it passes
    ``max_bytes``; shards get final names (and an index) in ``close``."""

    def __init__(self, out: Path, max_bytes: int):
        self.out, self.max_bytes = out, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.size = 0
        self.tmp_files: list[tuple[Path, list[str]]] = []
        self.total = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        self.pending[name] = t.contiguous()
        self.size += t.numel() * t.element_size()
        if self.size >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        p = self.out / f".shard-{len(self.tmp_files):05d}.safetensors.tmp"
        save_file(self.pending, str(p), metadata={"format": "pt"})
        self.tmp_files.append((p, list(self.pending)))
        self.total += self.size
        self.pending, self.size = {}, 0

    def close(self) -> list[Path]:
        self.flush()
        n = len(self.tmp_files)
        finals = []
        weight_map = {}
        for i, (tmp, names) in enumerate(self.tmp_files):
            final = self.out / ("model.safetensors" if n == 1
                                else f"model-{i + 1:05d}-of-{n:05d}.safetensors")
            # renamed here, not written through io.atomic_path: a shard's final
            # name says how many shards there are, known only at close
            os.replace(tmp, final)
            finals.append(final)
            weight_map.update({k: final.name for k in names})
        if n > 1:
            idx = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
            write_json(self.out / "model.safetensors.index.json", idx, indent=2)
        return finals


def export_hf(load: str, hf_dir: str, *, max_shard_bytes: int = 5 * 2**30) -> list[Path]:
    """Write ``hf_dir`` (safetensors + config.json) from a dist checkpoint saved
    at any TP/PP.  Single process; holds one layer at a time."""
    ckpt, _ = checkpoint.find_checkpoint(load)
    common = checkpoint.read_common(load)
    try:
        cfg = model_config.from_checkpoint(load)
    except checkpoint.CheckpointError as e:
        raise HFConvertError(str(e)) from None
    meta = dcp.FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    emb_key = EMBEDDING_KEY
    if emb_key not in meta:
        raise HFConvertError(f"{ckpt}: not a GPT model checkpoint (no {emb_key})")
    dtype = meta[emb_key].properties.dtype

    out = Path(hf_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, max_shard_bytes)
    top = _load_slices(ckpt, {"emb": (emb_key, None)}, meta)
    writer.add(*embedding_to_hf(cfg, top.pop("emb")))
    for i in range(cfg.num_layers):
        _export_layer(ckpt, meta, cfg, i, writer)
    specs = {"norm": (FINAL_NORM_KEY, None)}
    if cfg.untie_embeddings_and_output_weights:
        specs["out"] = (OUTPUT_KEY, None)
    t = _load_slices(ckpt, specs, meta)
    writer.add("model.norm.weight", t["norm"])
    if "out" in t:
        writer.add(*output_to_hf(cfg, t["out"]))
    del t
    files = writer.close()
    write_json(out / "config.json", hf_config_from_model(cfg, base=common.get("hf_config"), dtype=dtype),
               indent=2)
    return files


def _export_layer(ckpt: Path, meta: dict, cfg, i: int, writer: _ShardWriter) -> None:
    t = _load_slices(ckpt, {k: (key, i) for k, key in LAYER_KEYS.items()}, meta)
    for name, tensor in layer_to_hf(cfg, i, t, where=str(ckpt)):
        writer.add(name, tensor)


def layer_to_hf(cfg, i: int, t: dict, *, where: str = "model") -> list[tuple[str, torch.Tensor]]:
    """HF tensors of layer ``i`` from its whole (unsharded) megatron tensors
    ``t`` (``LAYER_KEYS``' short names): the fused QKV split per query group
    into q/k/v, fc1 into gate/up.  Shared by the export and by an inference
    engine's refit from a live model (``hf_convert.live``)."""
    h, f = cfg.hidden_size, cfg.ffn_hidden_size
    hd = h // cfg.num_attention_heads
    groups, qpg = cfg.kv_heads, cfg.num_attention_heads // cfg.kv_heads
    qkv_rows = (cfg.num_attention_heads + 2 * groups) * hd
    if tuple(t["qkv"].shape) != (qkv_rows, h) or tuple(t["fc1"].shape) != (2 * f, h):
        raise HFConvertError(f"{where}: layer {i} shapes disagree with its model_config")
    p = f"model.layers.{i}."
    g = t["qkv"].view(groups, (qpg + 2) * hd, h)
    return [
        (p + "self_attn.q_proj.weight", g[:, :qpg * hd].reshape(-1, h).clone()),
        (p + "self_attn.k_proj.weight", g[:, qpg * hd:(qpg + 1) * hd].reshape(-1, h).clone()),
        (p + "self_attn.v_proj.weight", g[:, (qpg + 1) * hd:].reshape(-1, h).clone()),
        (p + "self_attn.o_proj.weight", t["proj"]),
        (p + "mlp.gate_proj.weight", t["fc1"][:f].clone()),
        (p + "mlp.up_proj.weight", t["fc1"][f:].clone()),
        (p + "mlp.down_proj.weight", t["fc2"]),
        (p + "input_layernorm.weight", t["ln1"]),
        (p + "post_attention_layernorm.weight", t["ln2"]),
    ]


def embedding_to_hf(cfg, weight: torch.Tensor) -> tuple[str, torch.Tensor]:
    """The input embedding without Megatron's vocabulary padding rows."""
    return "model.embed_tokens.weight", weight[:cfg.vocab_size].clone()


def output_to_hf(cfg, weight: torch.Tensor) -> tuple[str, torch.Tensor]:
    """The (untied) output layer without Megatron's vocabulary padding rows."""
    return "lm_head.weight", weight[:cfg.vocab_size].clone()
