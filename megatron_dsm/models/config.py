"""Llama-architecture model configs (RMSNorm, SwiGLU, RoPE, no biases,
untied embeddings) and their mapping to megatron-core's TransformerConfig."""

from __future__ import annotations

import math

from megatron_dsm.checkpoint import read_model_config
from megatron_dsm.config import ConfigError, field, options


@options
class ModelConfig:
    num_layers: int = field(2, help="transformer layers")
    hidden_size: int = field(64, help="model width")
    num_attention_heads: int = field(4, help="attention heads")
    num_query_groups: int | None = field(None, help="KV heads for GQA (None: = heads)")
    ffn_hidden_size: int = field(176, help="SwiGLU inner width")
    vocab_size: int | None = field(None, help="tokenizer vocab size, padded by Megatron's rule (default: from the data's tokenizer sidecar)")
    make_vocab_size_divisible_by: int = field(128, help="vocab padding unit (times TP)")
    seq_length: int = field(128, help="context length")
    max_position_embeddings: int | None = field(None, help="RoPE table size (None: seq_length)")
    rotary_base: int = field(10000, help="RoPE theta")
    rope_scaling_factor: float | None = field(None, help="Llama-3 style RoPE scaling factor")
    norm_epsilon: float = field(1e-6, help="RMSNorm epsilon")
    init_method_std: float = field(0.02, help="weight init std")
    untie_embeddings_and_output_weights: bool = field(True, help="separate output layer")
    attention_dropout: float = field(0.0, help="attention dropout")
    hidden_dropout: float = field(0.0, help="hidden dropout")

    def __post_init__(self):
        for name in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                     "vocab_size", "seq_length"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"model: {name} must be > 0, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}")
        groups = self.num_query_groups or self.num_attention_heads
        if self.num_attention_heads % groups:
            raise ConfigError(f"model: heads {self.num_attention_heads} not divisible by "
                              f"query groups {groups}")

    @property
    def kv_heads(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    def check_parallel(self, tp: int, pp: int) -> None:
        """One clear line for layouts the model cannot be split into."""
        if self.num_attention_heads % tp:
            raise ConfigError(f"attention heads {self.num_attention_heads} are not divisible "
                              f"by tensor parallel size {tp}")
        if self.kv_heads % tp:
            raise ConfigError(f"query groups {self.kv_heads} are not divisible by tensor "
                              f"parallel size {tp}")
        if self.ffn_hidden_size % tp:
            raise ConfigError(f"ffn_hidden_size {self.ffn_hidden_size} is not divisible by "
                              f"tensor parallel size {tp}")
        if self.num_layers % pp:
            raise ConfigError(f"num_layers {self.num_layers} is not divisible by pipeline "
                              f"parallel size {pp}")

    def padded_vocab_size(self, tp: int = 1) -> int:
        if self.vocab_size is None:
            raise ConfigError("model vocab size unknown: give --vocab-size or data with a tokenizer sidecar")
        return pad_vocab_size(self.vocab_size, self.make_vocab_size_divisible_by, tp)

    def num_parameters(self, tp: int = 1) -> int:
        """Parameter count (all ranks together) for FLOP and memory estimates."""
        h, f, L, v = self.hidden_size, self.ffn_hidden_size, self.num_layers, self.padded_vocab_size(tp)
        hd = h // self.num_attention_heads
        qkv = h * (h + 2 * self.kv_heads * hd)
        attn = qkv + h * h
        mlp = 3 * h * f
        norms = 2 * h
        emb = v * h * (2 if self.untie_embeddings_and_output_weights else 1)
        return L * (attn + mlp + norms) + emb + h

    def train_flops_per_token(self, seq_length: int | None = None) -> int:
        """Model FLOPs of one training token (forward + backward), PaLM's
        count as MFU uses it: 6 per matmul parameter (the input embedding is
        a lookup, so it is left out; norms are not matmuls) plus the
        attention scores and values, 6 * 2 * L * h * S (the full square, not
        halved for the causal mask, as in PaLM and Megatron-LM)."""
        S = seq_length or self.seq_length
        h, L = self.hidden_size, self.num_layers
        matmul = self.num_parameters() - self.padded_vocab_size() * h - L * 2 * h - h
        return 6 * matmul + 12 * L * h * S


def pad_vocab_size(vocab: int, divisible_by: int, tp: int) -> int:
    """Megatron-LM's rule: round up to a multiple of divisible_by * TP."""
    multiple = divisible_by * tp
    return int(math.ceil(vocab / multiple) * multiple)


PRESETS: dict[str, dict] = {
    # DeepSeek-Coder-Base-v1.5 7B, the paper's starting point (Llama arch).
    "deepseek-coder-7b": dict(
        num_layers=30, hidden_size=4096, num_attention_heads=32, ffn_hidden_size=11008,
        vocab_size=102400, seq_length=4096, rotary_base=10000, norm_epsilon=1e-6),
    # ~1B shape for the GPU smoke benchmark.
    "llama-1b": dict(
        num_layers=16, hidden_size=2048, num_attention_heads=16, ffn_hidden_size=5504,
        vocab_size=32000, seq_length=2048),
    # Trains on 2 CPU cores in minutes; vocab from the data's tokenizer.
    "tiny": dict(
        num_layers=4, hidden_size=128, num_attention_heads=4, ffn_hidden_size=352,
        seq_length=128),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def from_dict(values: dict) -> ModelConfig:
    """A ModelConfig from its ``dataclasses.asdict`` form (lists back to tuples)."""
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def from_checkpoint(load: str) -> ModelConfig:
    """The model config a training-loop checkpoint records."""
    return from_dict(read_model_config(load))
