"""Build megatron-core GPTModels with the Llama architecture.

Layer specs: transformer-engine's spec when TE imports and CUDA is present,
megatron-core's local spec otherwise (CPU), with ``models.attention``'s
core attention.  The same GPTModel class runs on both.
"""

from __future__ import annotations

import hashlib
import math

import torch

from megatron_dsm import platform
from megatron_dsm.models.attention import LeanDotProductAttention
from megatron_dsm.models.config import ModelConfig


def unwrap(model):
    """The GPTModel inside megatron-core's DDP wrapper (keys without 'module.')."""
    while hasattr(model, "module"):
        model = model.module
    return model


def transformer_engine_available() -> bool:
    if not platform.cuda_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # TE missing or built for another CUDA: fall back
        return False
    return True


def layer_spec(use_te: bool | None = None):
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if use_te is None:
        use_te = transformer_engine_available()
    if use_te:
        return specs.get_gpt_layer_with_transformer_engine_spec()
    spec = specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    # megatron-core's DotProductAttention with the causal mask folded into
    # the score product (models/attention.py says where and why)
    spec.submodules.self_attention.submodules.core_attention = LeanDotProductAttention
    return spec


def transformer_config(cfg: ModelConfig, *, tp: int = 1, pp: int = 1, bf16: bool = False,
                       sequence_parallel: bool = False, **extra):
    from megatron.core.transformer.transformer_config import TransformerConfig

    cfg.check_parallel(tp, pp)
    on_gpu = platform.cuda_available()
    kw = dict(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.kv_heads,
        ffn_hidden_size=cfg.ffn_hidden_size,
        kv_channels=cfg.hidden_size // cfg.num_attention_heads,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.norm_epsilon,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        # CPU: megatron-core's fused-RoPE hook holds the platform layer's
        # implementation (bit for bit the unfused one, fewer ops) once the
        # shims are in; GPU: off until TE's fused kernel is checked against it
        apply_rope_fusion=not on_gpu and platform.shims_installed(),
        gradient_accumulation_fusion=False,
        attention_dropout=cfg.attention_dropout,
        hidden_dropout=cfg.hidden_dropout,
        init_method_std=cfg.init_method_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel and tp > 1,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        # CPU: initialise the full weight then take this rank's slice, so that
        # weights do not depend on the CUDA RNG tracker.
        use_cpu_initialization=not on_gpu,
        deallocate_pipeline_outputs=on_gpu,
        attention_softmax_in_fp32=True,
    )
    kw.update(extra)
    return TransformerConfig(**kw)


def build_model(cfg: ModelConfig, tconfig, *, pre_process: bool | None = None,
                post_process: bool | None = None, use_te: bool | None = None,
                vp_stage: int | None = None):
    """A GPTModel for this rank's pipeline stage, on this rank's device."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage()
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage()
    tp = tconfig.tensor_model_parallel_size
    rope_kw = {}
    if cfg.rope_scaling_factor:
        rope_kw = dict(rope_scaling=True, rope_scaling_factor=cfg.rope_scaling_factor)
    model = GPTModel(
        config=tconfig,
        transformer_layer_spec=layer_spec(use_te),
        vocab_size=cfg.padded_vocab_size(tp),
        max_sequence_length=cfg.max_position_embeddings or cfg.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=not cfg.untie_embeddings_and_output_weights,
        position_embedding_type="rope",
        rotary_base=cfg.rotary_base,
        **rope_kw,
    )
    return model.to(platform.device())


# ---------------------------------------------------------------------------
# layout-independent initialisation
# ---------------------------------------------------------------------------


def whole_model_reason(model) -> str | None:
    """None for a whole (one pipeline stage), RoPE megatron-core GPTModel
    without sequence/context parallelism or multi-token prediction, else the
    first setting outside that.  The common scope of the code paths that run
    a model's forward in one piece with their own inputs
    (``direct_decode.unsupported_reason``, ``rl.packing.unsupported_reason``)."""
    from megatron.core import parallel_state as ps

    m = unwrap(model)
    c = getattr(m, "config", None)
    if c is None or not hasattr(m, "decoder"):
        return f"not a megatron-core GPTModel ({type(m).__name__})"
    checks = [
        (ps.model_parallel_is_initialized() and ps.get_pipeline_model_parallel_world_size() > 1,
         "pipeline parallel size > 1"),
        (c.sequence_parallel, "sequence parallelism"),
        (getattr(c, "context_parallel_size", 1) > 1, "context parallelism"),
        (getattr(m, "position_embedding_type", "rope") != "rope", "position embedding is not RoPE"),
        (getattr(m, "mtp_process", False), "multi-token prediction"),
        (not (m.pre_process and m.post_process), "model is one pipeline stage of several"),
    ]
    return next((why for bad, why in checks if bad), None)


def _param_seed(seed: int, key: str, index: tuple[int, ...]) -> int:
    h = hashlib.sha256(f"{seed}|{key}|{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def sharded_parameters(model):
    """Yield the ShardedTensor of every parameter (``.data``: this rank's
    slice, a view of the live parameter), with megatron-core's factories
    (e.g. the SwiGLU fc1 split) built out: the layout dist_checkpointing saves."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory
    from megatron.core.dist_checkpointing.dict_utils import nested_values

    params = {id(p) for p in model.parameters()}
    for v in nested_values(model.sharded_state_dict()):
        items = []
        if isinstance(v, ShardedTensorFactory):
            built = v.build()
            items = [x for x in nested_values(built) if isinstance(x, ShardedTensor)]
            for x in items:
                x._factory_data = v.data
        elif isinstance(v, ShardedTensor):
            items = [v]
        for st in items:
            if st.data is None:
                continue
            base = getattr(st, "_factory_data", st.data)
            if id(base) in params or st.data.requires_grad or id(st.data) in params:
                yield st


@torch.no_grad()
def layout_independent_init(model, seed: int, std: float, num_layers: int) -> None:
    """Re-initialise every parameter so that its value depends only on
    (seed, parameter name, global layer) — not on TP/PP layout.

    megatron-core initialises weights from the RNG stream of the rank that
    builds them, so a PP=2 stage draws different numbers than PP=1 for the same
    layer.  Here each (unsharded) tensor is drawn from a generator seeded by its
    checkpoint key and global index, and this rank keeps its slice, found from
    the same ShardedTensor metadata dist_checkpointing uses.  Norm weights are
    ones; output-side projections get megatron's scaled init
    std / sqrt(2 * num_layers).
    """
    out_std = std / math.sqrt(2.0 * num_layers)
    for st in sharded_parameters(model):
        pre = st.prepend_axis_num
        index = tuple(st.global_offset[:pre])
        full_shape = tuple(st.global_shape[pre:])
        name = st.key
        if "norm" in name.split(".")[-2] or name.endswith("layer_norm_weight") or "layernorm" in name:
            value_full = torch.ones(full_shape)
        else:
            g = torch.Generator().manual_seed(_param_seed(seed, name, index))
            s = out_std if (name.endswith("linear_proj.weight") or name.endswith("linear_fc2.weight")) else std
            value_full = torch.empty(full_shape).normal_(0.0, s, generator=g)
        offs = st.global_offset[pre:]
        local = value_full[tuple(slice(o, o + n) for o, n in zip(offs, st.local_shape))]
        if st.flattened_range is not None:
            local = local.flatten()[st.flattened_range]
        st.data.copy_(local.to(st.data.dtype).view_as(st.data))
