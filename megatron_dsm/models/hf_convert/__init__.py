"""Hugging Face Llama-family checkpoints <-> this project's dist checkpoints.

Why this package exists: DeepSeekMath starts from DeepSeek-Coder-Base-v1.5 7B
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

The parts: ``hf_config`` (config.json <-> ModelConfig, what is supported,
presets), ``to_megatron`` (import: the tensor mapping above, streamed slice
by slice from safetensors), ``to_hf`` (export, layer by layer from the dist
checkpoint).
"""

from megatron_dsm.models.hf_convert.hf_config import (
    HF_PRESETS,
    HFConvertError,
    check_supported,
    hf_config_from_model,
    model_config_from_hf,
    read_hf_config,
)
from megatron_dsm.models.hf_convert.to_hf import export_hf
from megatron_dsm.models.hf_convert.to_megatron import (
    DTYPES,
    SafetensorsReader,
    fill_model_from_hf,
    hf_shard_for,
    hf_tensor_names,
    import_hf,
    write_model_yaml,
)

__all__ = [
    "DTYPES", "HFConvertError", "HF_PRESETS", "SafetensorsReader", "check_supported", "export_hf",
    "fill_model_from_hf", "hf_config_from_model", "hf_shard_for", "hf_tensor_names", "import_hf",
    "model_config_from_hf", "read_hf_config", "write_model_yaml",
]
