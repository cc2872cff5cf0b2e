"""Hugging Face Llama-family checkpoints <-> this project's dist checkpoints.

Why this module exists: DeepSeekMath starts from DeepSeek-Coder-Base-v1.5 7B
(a ``LlamaForCausalLM``) and its results are shared as HF checkpoints, so both
directions are needed at any TP/PP layout.

Tensor mapping (HF name -> megatron-core GPTModel, local spec):

* ``q_proj``/``k_proj``/``v_proj`` -> ``linear_qkv``: rows are grouped per
  query group g as ``[q heads of g; k_g; v_g]`` (GQA aware).  A TP rank owns a
  contiguous run of query groups, so its rows come from contiguous row ranges
  of q, k and v.
* ``gate_proj``/``up_proj`` -> ``linear_fc1`` = ``[gate; up]``; under TP each
  rank holds ``[gate_r; up_r]``.
* ``o_proj`` -> ``linear_proj``, ``down_proj`` -> ``linear_fc2`` (column
  slices under TP).
* ``input_layernorm`` / ``post_attention_layernorm`` -> the norms before
  attention / MLP; ``model.norm`` -> ``decoder.final_layernorm``.
* ``embed_tokens`` / ``lm_head`` -> word embeddings / output layer, padded
  with zero rows to Megatron's padded vocab on import and stripped on export;
  a tied model has no ``lm_head``.

Streaming: import reads every tensor through ``safetensors.safe_open`` and
only the rows/columns this rank owns (``get_slice``), so each rank holds its
model shard plus one slice at a time.  Export reads the dist checkpoint one
layer at a time (ShardedTensors naming one layer of the stacked layer axis)
and writes safetensors shards as they fill, whatever layout saved it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from megatron_dsm import checkpoint, platform
from megatron_dsm.config import ConfigError
from megatron_dsm.io import atomic_write, write_json
from megatron_dsm.models import config as model_config
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import build_model, transformer_config


class HFConvertError(ConfigError):
    """An HF checkpoint or config this converter cannot map (one line)."""


# ---------------------------------------------------------------------------
# config.json presets (public model cards / config.json contents)
# ---------------------------------------------------------------------------

_DEEPSEEK_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 30,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 102400,
    "max_position_embeddings": 4096, "rope_theta": 10000.0, "rope_scaling": None,
    "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False,
    "attention_bias": False, "bos_token_id": 100000, "eos_token_id": 100001,
    "initializer_range": 0.02, "torch_dtype": "bfloat16",
}

# DeepSeek-Coder-Base-v1.5 7B was continued from DeepSeek-LLM 7B and keeps its
# shape (30 layers, vocab 102400, 4K context, theta 10000, no RoPE scaling);
# the 6.7B v1 coder (32 layers, vocab 32256, theta 100000, linear x4 scaling)
# is a different model.  DeepSeekMath-Base 7B starts from v1.5, same shape.
HF_PRESETS: dict[str, dict] = {
    "deepseek-coder-v1.5-7b": dict(_DEEPSEEK_7B),
    "deepseekmath-7b": dict(_DEEPSEEK_7B),
    "llama-2-7b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "rope_scaling": None,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
        "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
        "initializer_range": 0.02, "torch_dtype": "float16",
    },
}

# megatron-core's RoPE scaling is Llama-3's with these constants fixed.
_LLAMA3_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}


# ---------------------------------------------------------------------------
# configuration both ways
# ---------------------------------------------------------------------------


def check_supported(hf: dict) -> None:
    """One clear line for any HF config this mapping would silently get wrong."""
    arch = (hf.get("architectures") or ["?"])[0]
    mtype = hf.get("model_type", "?")
    if arch != "LlamaForCausalLM" or mtype != "llama":
        hint = ""
        if any(k in hf for k in ("kv_lora_rank", "q_lora_rank")):
            hint = " (multi-head latent attention is not supported)"
        elif any(k in hf for k in ("num_experts", "num_local_experts", "n_routed_experts",
                                   "moe_intermediate_size")):
            hint = " (mixture-of-experts is not supported)"
        raise HFConvertError(f"unsupported architecture {arch} / model_type {mtype}{hint}; "
                             "only LlamaForCausalLM (llama) is supported")
    for k in ("num_experts", "num_local_experts", "n_routed_experts"):
        if hf.get(k):
            raise HFConvertError(f"mixture-of-experts config ({k}={hf[k]}) is not supported")
    if hf.get("kv_lora_rank") or hf.get("q_lora_rank"):
        raise HFConvertError("multi-head latent attention (kv_lora_rank) is not supported")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise HFConvertError("linear biases (attention_bias/mlp_bias) are not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise HFConvertError(f"hidden_act {hf['hidden_act']!r} is not supported (SwiGLU/silu only)")
    heads = hf["num_attention_heads"]
    hd = hf.get("head_dim")
    if hd is not None and hd != hf["hidden_size"] // heads:
        raise HFConvertError(f"head_dim {hd} != hidden_size/heads {hf['hidden_size'] // heads}: "
                             "not supported")
    rs = hf.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "default":
            return
        if kind != "llama3":
            raise HFConvertError(f"rope_scaling type {kind!r} is not supported (llama3 or none)")
        for k, v in _LLAMA3_FIXED.items():
            if float(rs.get(k, v)) != v:
                raise HFConvertError(f"llama3 rope_scaling {k}={rs.get(k)} is not supported "
                                     f"(megatron-core fixes it to {v})")


def _rope_factor(hf: dict) -> float | None:
    rs = hf.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        return float(rs["factor"])
    return None


def _rope_theta(hf: dict) -> float:
    if "rope_theta" in hf:
        return float(hf["rope_theta"])
    rp = hf.get("rope_parameters") or {}  # transformers 5 spelling
    return float(rp.get("rope_theta", 10000.0))


def model_config_from_hf(hf: dict, *, make_vocab_size_divisible_by: int = 128) -> ModelConfig:
    """The project's ModelConfig for an HF config.json dict."""
    check_supported(hf)
    if hf.get("rope_scaling") is None and hf.get("rope_parameters"):
        rp = hf["rope_parameters"]
        if rp.get("rope_type", "default") != "default":
            hf = dict(hf, rope_scaling=rp)
            check_supported(hf)
    theta = _rope_theta(hf)
    if theta != int(theta):
        raise HFConvertError(f"rope_theta {theta} is not an integer (ModelConfig.rotary_base is int)")
    max_pos = int(hf.get("max_position_embeddings", 4096))
    return ModelConfig(
        num_layers=int(hf["num_hidden_layers"]), hidden_size=int(hf["hidden_size"]),
        num_attention_heads=int(hf["num_attention_heads"]),
        num_query_groups=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
        ffn_hidden_size=int(hf["intermediate_size"]), vocab_size=int(hf["vocab_size"]),
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        seq_length=max_pos, max_position_embeddings=max_pos, rotary_base=int(theta),
        rope_scaling_factor=_rope_factor(hf), norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
        init_method_std=float(hf.get("initializer_range", 0.02)),
        untie_embeddings_and_output_weights=not bool(hf.get("tie_word_embeddings", False)))


def hf_config_from_model(cfg: ModelConfig, *, base: dict | None = None,
                         dtype: torch.dtype = torch.float32) -> dict:
    """config.json for a ModelConfig; ``base`` (the imported config) keeps
    fields the project does not model, such as token ids."""
    out = dict(base or {})
    for k in ("rope_parameters",):  # rewritten below from the model's values
        out.pop(k, None)
    out.update({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.ffn_hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.kv_heads, "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings or cfg.seq_length,
        "rope_theta": float(cfg.rotary_base), "rms_norm_eps": cfg.norm_epsilon,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": not cfg.untie_embeddings_and_output_weights,
        "initializer_range": cfg.init_method_std,
        "torch_dtype": str(dtype).replace("torch.", ""),
        "rope_scaling": (dict(rope_type="llama3", factor=cfg.rope_scaling_factor, **_LLAMA3_FIXED)
                         if cfg.rope_scaling_factor else None),
    })
    return out


def read_hf_config(hf_dir: str | os.PathLike) -> dict:
    p = Path(hf_dir) / "config.json"
    if not p.is_file():
        raise HFConvertError(f"{hf_dir}: no config.json")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise HFConvertError(f"{p}: invalid JSON: {e}") from None


# ---------------------------------------------------------------------------
# reading safetensors, slice by slice
# ---------------------------------------------------------------------------


class SafetensorsReader:
    """Name -> file index over a HF directory; reads one (sliced) tensor at a
    time so nothing else stays resident."""

    def __init__(self, hf_dir: str | os.PathLike):
        d = Path(hf_dir)
        index = d / "model.safetensors.index.json"
        if index.is_file():
            wm = json.loads(index.read_text())["weight_map"]
            self.files = {k: d / v for k, v in wm.items()}
        elif (d / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(str(d / "model.safetensors"), framework="pt") as f:
                self.files = {k: d / "model.safetensors" for k in f.keys()}
        else:
            if list(d.glob("*.bin")):
                raise HFConvertError(f"{hf_dir}: only .bin weights found; convert to safetensors "
                                     "first (save_pretrained(safe_serialization=True))")
            raise HFConvertError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json")
        self.dtype: torch.dtype | None = None

    def has(self, name: str) -> bool:
        return name in self.files

    def shape(self, name: str) -> list[int]:
        from safetensors import safe_open

        with safe_open(str(self._file(name)), framework="pt") as f:
            return list(f.get_slice(name).get_shape())

    def _file(self, name: str) -> Path:
        if name not in self.files:
            raise HFConvertError(f"tensor {name} not found in the HF checkpoint")
        return self.files[name]

    def read(self, name: str, rows: tuple[int, int] | None = None,
             cols: tuple[int, int] | None = None) -> torch.Tensor:
        """``name`` or its [rows, cols] slice, materialised as a fresh tensor."""
        from safetensors import safe_open

        with safe_open(str(self._file(name)), framework="pt") as f:
            sl = f.get_slice(name)
            r = slice(*rows) if rows else slice(None)
            if cols is not None:
                t = sl[r, slice(*cols)]
            else:
                t = sl[r]
            t = t.clone()
        self.dtype = self.dtype or t.dtype
        return t

    def check_keys(self, cfg: ModelConfig) -> None:
        """Every expected tensor is present and nothing unknown is (biases, experts)."""
        expected = set(hf_tensor_names(cfg))
        extra = sorted(set(self.files) - expected
                       - {f"model.layers.{i}.self_attn.rotary_emb.inv_freq"
                          for i in range(cfg.num_layers)})
        if extra:
            raise HFConvertError(f"unsupported tensors in the HF checkpoint (e.g. {extra[0]}); "
                                 f"{len(extra)} not mapped")
        missing = sorted(expected - set(self.files))
        if missing:
            raise HFConvertError(f"HF checkpoint lacks {missing[0]} ({len(missing)} missing)")


def hf_tensor_names(cfg: ModelConfig) -> list[str]:
    names = ["model.embed_tokens.weight"]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        names += [p + n for n in ("input_layernorm.weight", "post_attention_layernorm.weight",
                                  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                  "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                  "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                  "mlp.down_proj.weight")]
    names.append("model.norm.weight")
    if cfg.untie_embeddings_and_output_weights:
        names.append("lm_head.weight")
    return names


# ---------------------------------------------------------------------------
# HF -> one rank's megatron shard
# ---------------------------------------------------------------------------


def _split(n: int, tp: int, rank: int) -> tuple[int, int]:
    per = n // tp
    return rank * per, (rank + 1) * per


def _vocab_rows(reader: SafetensorsReader, name: str, cfg: ModelConfig, tp: int, rank: int,
                local_rows: int) -> torch.Tensor:
    """This rank's rows of the padded vocab table; padding rows are zero."""
    start = rank * local_rows
    stop = min(start + local_rows, cfg.vocab_size)
    out_parts = []
    if stop > start:
        out_parts.append(reader.read(name, rows=(start, stop)))
    n_pad = local_rows - max(stop - start, 0)
    if n_pad:
        ref = out_parts[0] if out_parts else reader.read(name, rows=(0, 1))
        out_parts.append(torch.zeros(n_pad, cfg.hidden_size, dtype=ref.dtype))
    return torch.cat(out_parts) if len(out_parts) > 1 else out_parts[0]


def hf_shard_for(name: str, layer: int | None, reader: SafetensorsReader, cfg: ModelConfig,
                 tp: int, rank: int, local_shape: tuple[int, ...]) -> torch.Tensor:
    """The value of megatron parameter ``name`` (local name, layer index
    stripped) on TP rank ``rank``, read from the HF checkpoint."""
    p = f"model.layers.{layer}." if layer is not None else ""
    h = cfg.hidden_size
    hd = h // cfg.num_attention_heads
    if name == "embedding.word_embeddings.weight":
        return _vocab_rows(reader, "model.embed_tokens.weight", cfg, tp, rank, local_shape[0])
    if name == "output_layer.weight":
        src = "lm_head.weight" if cfg.untie_embeddings_and_output_weights else "model.embed_tokens.weight"
        return _vocab_rows(reader, src, cfg, tp, rank, local_shape[0])
    if name == "decoder.final_layernorm.weight":
        return reader.read("model.norm.weight")
    if name == "input_layernorm.weight":
        return reader.read(p + "input_layernorm.weight")
    if name == "pre_mlp_layernorm.weight":
        return reader.read(p + "post_attention_layernorm.weight")
    if name == "self_attention.linear_qkv.weight":
        groups = cfg.kv_heads
        qpg = cfg.num_attention_heads // groups
        g0, g1 = _split(groups, tp, rank)
        q = reader.read(p + "self_attn.q_proj.weight", rows=(g0 * qpg * hd, g1 * qpg * hd))
        k = reader.read(p + "self_attn.k_proj.weight", rows=(g0 * hd, g1 * hd))
        v = reader.read(p + "self_attn.v_proj.weight", rows=(g0 * hd, g1 * hd))
        n = g1 - g0
        fused = torch.cat([q.view(n, qpg * hd, h), k.view(n, hd, h), v.view(n, hd, h)], dim=1)
        return fused.reshape(-1, h)
    if name == "self_attention.linear_proj.weight":
        return reader.read(p + "self_attn.o_proj.weight", cols=_split(h, tp, rank))
    if name == "mlp.linear_fc1.weight":
        rows = _split(cfg.ffn_hidden_size, tp, rank)
        return torch.cat([reader.read(p + "mlp.gate_proj.weight", rows=rows),
                          reader.read(p + "mlp.up_proj.weight", rows=rows)])
    if name == "mlp.linear_fc2.weight":
        return reader.read(p + "mlp.down_proj.weight", cols=_split(cfg.ffn_hidden_size, tp, rank))
    raise HFConvertError(f"no HF mapping for megatron parameter {name}")


@torch.no_grad()
def fill_model_from_hf(model, reader: SafetensorsReader, cfg: ModelConfig) -> int:
    """Copy this rank's slice of every parameter from the HF checkpoint;
    returns the number of parameters filled."""
    from megatron.core import parallel_state as ps

    tp = ps.get_tensor_model_parallel_world_size()
    rank = ps.get_tensor_model_parallel_rank()
    layers = {i: layer.layer_number - 1 for i, layer in enumerate(model.decoder.layers)}
    n = 0
    for pname, param in model.named_parameters():
        parts = pname.split(".")
        if parts[:2] == ["decoder", "layers"]:
            layer, local = layers[int(parts[2])], ".".join(parts[3:])
        else:
            layer, local = None, pname
        value = hf_shard_for(local, layer, reader, cfg, tp, rank, tuple(param.shape))
        if tuple(value.shape) != tuple(param.shape):
            raise HFConvertError(f"{pname}: HF slice has shape {tuple(value.shape)}, model shard "
                                 f"expects {tuple(param.shape)} (config and weights disagree?)")
        param.data.copy_(value.to(param.dtype))
        del value
        n += 1
    return n


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def import_hf(hf_dir: str, save: str, *, tp: int = 1, pp: int = 1, dtype: str = "auto",
              make_vocab_size_divisible_by: int = 128) -> Path:
    """Convert ``hf_dir`` into ``save/iter_0000000`` (run on TP x PP ranks)."""
    hf = read_hf_config(hf_dir)
    cfg = model_config_from_hf(hf, make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    cfg.check_parallel(tp, pp)
    reader = SafetensorsReader(hf_dir)
    reader.check_keys(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp * pp:
        raise HFConvertError(f"run the import on TP x PP = {tp * pp} processes (torchrun "
                             f"--nproc-per-node {tp * pp}), not {world}")
    if dtype == "auto":
        src = reader.read("model.norm.weight").dtype
        pdtype = src if src in (torch.float32, torch.bfloat16) else torch.float32
    elif dtype in DTYPES:
        pdtype = DTYPES[dtype]
    else:
        raise HFConvertError(f"--dtype {dtype!r}: choose auto, fp32, bf16 or fp16")
    platform.initialize_distributed(tp, pp, seed=0)
    tconf = transformer_config(cfg, tp=tp, pp=pp, bf16=pdtype == torch.bfloat16,
                               params_dtype=pdtype, pipeline_dtype=pdtype)
    model = build_model(cfg, tconf, use_te=False)
    fill_model_from_hf(model, reader, cfg)
    common = {"iteration": 0, "consumed_samples": 0, "scheduler": None,
              "model_config": dataclasses.asdict(cfg), "hf_config": hf,
              "converted_from": str(Path(hf_dir).resolve())}
    path = checkpoint.save_checkpoint(save, 0, model, None, common)
    if torch.distributed.get_rank() == 0:
        write_model_yaml(Path(save) / "model.yaml", cfg)
    torch.distributed.barrier()
    return path


def write_model_yaml(path: Path, cfg: ModelConfig) -> None:
    """``--config`` file for tools/pretrain.py: the converted model's shape."""
    import yaml

    atomic_write(path, yaml.safe_dump({"model": dataclasses.asdict(cfg)}, sort_keys=False))


# ---------------------------------------------------------------------------
# dist checkpoint -> HF, layer by layer
# ---------------------------------------------------------------------------


def _dcp_region_planner(regions: dict):
    """A torch.distributed.checkpoint LoadPlanner that reads only the given
    regions: ``{key: (offsets, destination tensor)}``.

    Why not ``dist_checkpointing.load`` with one layer's ShardedTensor: its
    torch_dist path rebuilds a torch ShardedTensor from all fragments of the
    key and refuses a partial one.  The stored chunks are per layer (and per
    saving TP rank), so a region read touches one layer's bytes only.
    """
    from torch.distributed._shard._utils import narrow_tensor_by_index
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata
    from torch.distributed.checkpoint.planner import LoadPlan
    from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

    class RegionPlanner(DefaultLoadPlanner):
        def create_local_plan(self):
            items = []
            for key, (offsets, dest) in regions.items():
                md = self.metadata.state_dict_metadata.get(key)
                if md is None:
                    raise HFConvertError(f"checkpoint has no tensor {key}")
                chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=dest.size())
                items += create_read_items_for_chunk_list(key, md, [chunk])
            return LoadPlan(items)

        def resolve_tensor(self, read_item):
            dest = regions[read_item.dest_index.fqn][1]
            return narrow_tensor_by_index(dest, read_item.dest_offsets, read_item.lengths)

        def commit_tensor(self, read_item, tensor):
            return None

    return RegionPlanner()


def _load_slices(ckpt: Path, specs: dict, meta: dict) -> dict:
    """Load ``{out: (key, layer)}`` from the dist checkpoint: the whole tensor
    (layer None), or layer ``layer`` of a stacked (L, ...) tensor."""
    import torch.distributed.checkpoint as dcp

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
             planner=_dcp_region_planner(regions), no_dist=True)
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
        from safetensors.torch import save_file

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
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    emb_key = "embedding.word_embeddings.weight"
    if emb_key not in meta:
        raise HFConvertError(f"{ckpt}: not a GPT model checkpoint (no {emb_key})")
    dtype = meta[emb_key].properties.dtype
    h, f, L = cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_layers
    hd = h // cfg.num_attention_heads
    groups, qpg = cfg.kv_heads, cfg.num_attention_heads // cfg.kv_heads
    qkv_rows = (cfg.num_attention_heads + 2 * groups) * hd

    out = Path(hf_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, max_shard_bytes)
    top = _load_slices(ckpt, {"emb": (emb_key, None)}, meta)
    writer.add("model.embed_tokens.weight", top.pop("emb")[:cfg.vocab_size].clone())
    pre = "decoder.layers."
    for i in range(L):
        t = _load_slices(ckpt, {
            "ln1": (pre + "self_attention.linear_qkv.layer_norm_weight", i),
            "ln2": (pre + "mlp.linear_fc1.layer_norm_weight", i),
            "qkv": (pre + "self_attention.linear_qkv.weight", i),
            "proj": (pre + "self_attention.linear_proj.weight", i),
            "fc1": (pre + "mlp.linear_fc1.weight", i),
            "fc2": (pre + "mlp.linear_fc2.weight", i),
        }, meta)
        if tuple(t["qkv"].shape) != (qkv_rows, h) or tuple(t["fc1"].shape) != (2 * f, h):
            raise HFConvertError(f"{ckpt}: layer {i} shapes disagree with its model_config")
        p = f"model.layers.{i}."
        g = t["qkv"].view(groups, (qpg + 2) * hd, h)
        writer.add(p + "self_attn.q_proj.weight", g[:, :qpg * hd].reshape(-1, h).clone())
        writer.add(p + "self_attn.k_proj.weight", g[:, qpg * hd:(qpg + 1) * hd].reshape(-1, h).clone())
        writer.add(p + "self_attn.v_proj.weight", g[:, (qpg + 1) * hd:].reshape(-1, h).clone())
        writer.add(p + "self_attn.o_proj.weight", t["proj"])
        writer.add(p + "mlp.gate_proj.weight", t["fc1"][:f].clone())
        writer.add(p + "mlp.up_proj.weight", t["fc1"][f:].clone())
        writer.add(p + "mlp.down_proj.weight", t["fc2"])
        writer.add(p + "input_layernorm.weight", t["ln1"])
        writer.add(p + "post_attention_layernorm.weight", t["ln2"])
        del t, g
    specs = {"norm": ("decoder.final_layernorm.weight", None)}
    if cfg.untie_embeddings_and_output_weights:
        specs["out"] = ("output_layer.weight", None)
    t = _load_slices(ckpt, specs, meta)
    writer.add("model.norm.weight", t["norm"])
    if "out" in t:
        writer.add("lm_head.weight", t["out"][:cfg.vocab_size].clone())
    del t
    files = writer.close()
    write_json(out / "config.json", hf_config_from_model(cfg, base=common.get("hf_config"), dtype=dtype),
               indent=2)
    return files
