"""GPTModel backbone with a scalar value head: the reward models' network.

How the head reads the final hidden state.  ``ValueGPTModel`` *is* a
megatron-core ``GPTModel`` built with ``post_process=True`` on the last
pipeline stage, so its decoder owns the final RMSNorm (``decoder.final_layernorm``)
exactly as in the language model.  After construction the vocabulary output
layer is removed and ``post_process`` is switched off: GPTModel's
``_postprocess`` then returns the decoder output (post final norm, shape
``[S, B, H]``) instead of logits, and the head ``value_head`` (a plain
``Linear(H, 1)``) maps it to one score per token.

Tensor parallelism.  Without sequence parallelism the decoder output is the
full hidden state on every TP rank (the last RowParallelLinear all-reduces),
so the head is *replicated*: identical weights on every TP rank (the
layout-independent init draws them from the checkpoint key), identical
inputs and therefore identical scores and gradients; TP=1 and TP=2 agree up
to the order of floating-point sums.  Sequence parallelism would shard the
hidden state along the sequence and is refused.

Checkpoints.  Because the class is a GPTModel, every backbone key equals the
language model's key (``decoder.layers.0...``, ``embedding...``); the head
adds ``value_head.weight``/``value_head.bias`` (replicated ShardedTensors).
:func:`load_weights` therefore initialises the backbone from *any*
checkpoint of the training loop (pretrained, SFT, or a reward model) and the
head too when the checkpoint has one.
"""

from __future__ import annotations

import torch

from megatron_dsm import platform
from megatron_dsm.checkpoint import find_checkpoint, keep_own_extra_state, load_sharded
from megatron_dsm.config import ConfigError
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import layer_spec, unwrap

HEAD_PREFIX = "value_head."


def _gpt_class():
    from megatron.core.models.gpt import GPTModel

    return GPTModel


class ValueGPTModel(_gpt_class()):
    """GPTModel whose last stage returns ``values [B, S]`` (fp32) instead of logits."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.sequence_parallel:
            raise ConfigError("the value head needs the full hidden state: turn off --sequence-parallel")
        self.has_value_head = bool(self.post_process)
        if self.has_value_head:
            del self.output_layer           # no vocabulary projection
            self.post_process = False       # _postprocess now returns hidden states
            self.value_head = torch.nn.Linear(self.config.hidden_size, 1, bias=True,
                                              dtype=self.config.params_dtype)
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, position_ids, attention_mask, *, packed_seq_params=None, **kw):
        hidden = super().forward(input_ids, position_ids, attention_mask,
                                 packed_seq_params=packed_seq_params, **kw)
        if not self.has_value_head:
            return hidden                   # an earlier pipeline stage: pass activations on
        values = self.value_head(hidden).squeeze(-1)   # [S, B]
        return values.transpose(0, 1).float().contiguous()  # [B, S]


def build_value_model(cfg: ModelConfig, tconfig, *, use_te: bool | None = None,
                      pre_process: bool | None = None, post_process: bool | None = None):
    """A ValueGPTModel for this rank's pipeline stage (same arguments as
    ``models.gpt.build_model``); usable as ``Trainer(model_builder=...)``."""
    from megatron.core import parallel_state

    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage()
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage()
    rope_kw = {}
    if cfg.rope_scaling_factor:
        rope_kw = dict(rope_scaling=True, rope_scaling_factor=cfg.rope_scaling_factor)
    model = ValueGPTModel(
        config=tconfig, transformer_layer_spec=layer_spec(use_te),
        vocab_size=cfg.padded_vocab_size(tconfig.tensor_model_parallel_size),
        max_sequence_length=cfg.max_position_embeddings or cfg.seq_length,
        pre_process=pre_process, post_process=post_process,
        share_embeddings_and_output_weights=not cfg.untie_embeddings_and_output_weights,
        position_embedding_type="rope", rotary_base=cfg.rotary_base, **rope_kw)
    return model.to(platform.device())


def checkpoint_has_head(load: str) -> bool:
    """Whether the checkpoint that ``--load`` points at holds value-head weights."""
    from megatron.core import dist_checkpointing

    ckpt, _ = find_checkpoint(load)
    meta = dist_checkpointing.load_tensors_metadata(str(ckpt))
    return any(k.startswith(HEAD_PREFIX) for k in meta)


def load_weights(model, load: str) -> dict:
    """Load a value model's weights from any training-loop checkpoint.

    The backbone always loads; the head loads when the checkpoint has one
    (a reward model) and otherwise keeps its initialisation (a language
    model: pretrained or SFT).  Optimizer state is not touched (finetune
    semantics).  Returns ``{"loaded_from", "head_loaded"}``."""
    from megatron.core import dist_checkpointing

    ckpt, iteration = find_checkpoint(load)
    inner = unwrap(model)
    meta = dist_checkpointing.load_tensors_metadata(str(ckpt))
    has_head = any(k.startswith(HEAD_PREFIX) for k in meta)
    sd = inner.sharded_state_dict()
    if not has_head:
        sd = {k: v for k, v in sd.items() if not k.startswith(HEAD_PREFIX)}
    try:
        loaded = keep_own_extra_state(inner, load_sharded(sd, ckpt))   # any layer spec's checkpoint
    except Exception as e:  # megatron-core's message lists every key; keep one line
        raise ConfigError(f"{ckpt}: cannot load into a value model ({str(e).splitlines()[0][:200]})") from None
    result = inner.load_state_dict(loaded, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(HEAD_PREFIX)]
    if missing:
        raise ConfigError(f"{ckpt}: weights not loaded: {missing[:3]}")
    return {"loaded_from": str(ckpt), "source_iteration": iteration, "head_loaded": has_head}
