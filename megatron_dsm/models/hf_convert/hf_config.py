"""HF ``config.json`` <-> the project's ModelConfig, and what the mapping supports.

Only ``LlamaForCausalLM`` without biases, experts or latent attention maps
onto megatron-core's GPTModel with the local spec; anything else is refused
with one line instead of being converted wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from megatron_dsm.config import ConfigError
from megatron_dsm.models.config import ModelConfig


class HFConvertError(ConfigError):
    """An HF checkpoint or config this converter cannot map (one line)."""


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
    # the same Llama block; Llama-2 differs in depth, vocabulary, norm eps and special ids
    "llama-2-7b": dict(_DEEPSEEK_7B, num_hidden_layers=32, vocab_size=32000, rms_norm_eps=1e-5,
                       bos_token_id=1, eos_token_id=2, torch_dtype="float16"),
}

# megatron-core's RoPE scaling is Llama-3's with these constants fixed.
_LLAMA3_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}


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
