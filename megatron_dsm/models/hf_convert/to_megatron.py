"""HF checkpoint -> this project's dist checkpoint, at any TP/PP layout.

Import reads every tensor through ``safetensors.safe_open`` and only the
rows/columns this rank owns (``get_slice``), so each rank holds its model
shard plus one slice at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
import yaml
from megatron.core import parallel_state as ps
from safetensors import safe_open

from megatron_dsm import checkpoint, platform
from megatron_dsm.io import atomic_write
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import build_model, transformer_config
from megatron_dsm.models.hf_convert.hf_config import HFConvertError, model_config_from_hf, read_hf_config


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
        with safe_open(str(self._file(name)), framework="pt") as f:
            return list(f.get_slice(name).get_shape())

    def _file(self, name: str) -> Path:
        if name not in self.files:
            raise HFConvertError(f"tensor {name} not found in the HF checkpoint")
        return self.files[name]

    def read(self, name: str, rows: tuple[int, int] | None = None,
             cols: tuple[int, int] | None = None) -> torch.Tensor:
        """``name`` or its [rows, cols] slice, materialised as a fresh tensor."""
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
    atomic_write(path, yaml.safe_dump({"model": dataclasses.asdict(cfg)}, sort_keys=False))
