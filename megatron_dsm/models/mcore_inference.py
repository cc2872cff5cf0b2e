"""The megatron-core internals that in-process generation relies on, in one place.

``generation.MegatronStep`` drives ``GPTModel.forward`` with megatron-core's
static KV cache.  That leans on details megatron-core does not promise to
keep between releases:

- ``StaticInferenceContext(max_batch_size=, max_sequence_length=)`` with its
  ``key_value_memory_dict``, ``sequence_len_offset`` (one offset shared by
  every row: a row's RoPE angles and cache columns come from it, not from
  ``position_ids``) and ``enable_decode_mode``;
- ``Attention._adjust_key_value_for_inference`` reading a layer's buffers from
  ``key_value_memory_dict`` and calling ``Attention._allocate_memory`` only
  when the layer has no entry.  ``_allocate_memory`` allocates on the current
  CUDA device, which fails on a CPU build, so ``StaticKVCache`` fills the dict
  first with buffers of its layout ``[max_seq, max_batch, kv_heads_per_partition,
  head_dim]`` on ``platform.device()``; megatron-core's cache logic is unchanged;
- the attention attributes that give that layout (``layer_number``,
  ``num_query_groups_per_partition``, ``key_hidden_size``, ``val_hidden_size``);
- ``GPTModel.forward(..., inference_context=, runtime_gather_output=)``.

``missing()`` checks each of these against the installed megatron-core
(names, signatures, and the source lines the pre-filling depends on);
``tests/models/test_mcore_inference.py`` runs it for every version in
``SUPPORTED`` (the one the project pins: requirements.txt, setup.py and the
Docker image).  ``StaticKVCache`` refuses to run when anything is missing.
"""

from __future__ import annotations

import functools
import inspect

import torch
from megatron.core import __version__ as MCORE_VERSION
from megatron.core.inference.contexts import StaticInferenceContext
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.attention import Attention

from megatron_dsm import platform

# megatron-core versions whose internals ``missing()`` has been checked
# against (the test runs it on the installed one)
SUPPORTED = ("0.16.1",)


class MegatronCoreAPIError(RuntimeError):
    """The installed megatron-core lacks an internal generation relies on."""


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _source(fn) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def _checks() -> list[tuple[str, bool]]:
    ctx = StaticInferenceContext(max_batch_size=1, max_sequence_length=1)
    adjust = _source(Attention._adjust_key_value_for_inference)
    init = _source(Attention.__init__)
    return [
        ("StaticInferenceContext(max_batch_size, max_sequence_length)",
         {"max_batch_size", "max_sequence_length"} <= set(_params(StaticInferenceContext.__init__))),
        ("StaticInferenceContext.key_value_memory_dict (a dict)",
         isinstance(getattr(ctx, "key_value_memory_dict", None), dict)),
        ("StaticInferenceContext.sequence_len_offset (an int, 0 at start)",
         getattr(ctx, "sequence_len_offset", None) == 0),
        ("StaticInferenceContext.batch_size_offset (0)", getattr(ctx, "batch_size_offset", None) == 0),
        ("StaticInferenceContext.enable_decode_mode()", callable(getattr(ctx, "enable_decode_mode", None))),
        ("StaticInferenceContext.is_static_batching() is True",
         callable(getattr(ctx, "is_static_batching", None)) and ctx.is_static_batching() is True),
        ("Attention._allocate_memory(inference_max_sequence_length, batch_size, dim, dtype)",
         _params(getattr(Attention, "_allocate_memory", lambda: None))
         == ["self", "inference_max_sequence_length", "batch_size", "dim", "dtype"]),
        ("Attention._adjust_key_value_for_inference allocates only for a layer missing from "
         "key_value_memory_dict",
         "self.layer_number not in inference_context.key_value_memory_dict" in adjust
         and "self._allocate_memory(" in adjust),
        ("Attention attributes layer_number, num_query_groups_per_partition, key_hidden_size, "
         "val_hidden_size",
         all(f"self.{a} =" in init for a in ("layer_number", "num_query_groups_per_partition",
                                            "key_hidden_size", "val_hidden_size"))),
        ("GPTModel.forward(inference_context=, runtime_gather_output=)",
         {"inference_context", "runtime_gather_output"} <= set(_params(GPTModel.forward))),
    ]


@functools.lru_cache(maxsize=1)
def missing() -> tuple[str, ...]:
    """The internals (see the module docstring) the installed megatron-core lacks."""
    return tuple(name for name, ok in _checks() if not ok)


def check() -> None:
    """One clear error when the installed megatron-core lacks an internal."""
    gone = missing()
    if gone:
        raise MegatronCoreAPIError(
            f"megatron-core {MCORE_VERSION} lacks what in-process generation relies on "
            f"(checked for {', '.join(SUPPORTED)}): {'; '.join(gone)}")


class StaticKVCache:
    """megatron-core's ``StaticInferenceContext`` for ``model``, its KV buffers
    allocated here (see the module docstring), and one forward per call."""

    def __init__(self, model, max_batch: int, max_seq: int, dtype: torch.dtype):
        check()
        self.model = model
        self.context = StaticInferenceContext(max_batch_size=max_batch, max_sequence_length=max_seq)
        dev = platform.device()
        for m in model.modules():
            if isinstance(m, Attention) and m.layer_number not in self.context.key_value_memory_dict:
                groups = m.num_query_groups_per_partition
                k = torch.empty(max_seq, max_batch, groups, m.key_hidden_size, dtype=dtype, device=dev)
                v = torch.empty(max_seq, max_batch, groups, m.val_hidden_size, dtype=dtype, device=dev)
                self.context.key_value_memory_dict[m.layer_number] = (k, v)

    @property
    def offset(self) -> int:
        """Columns cached so far (the next token's position)."""
        return self.context.sequence_len_offset

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits of the last column for ``tokens`` [b, q] at columns
        ``offset..offset+q-1``: the whole prompt first (prefill), then one
        token per row (decode mode: megatron-core then masks nothing)."""
        if self.context.sequence_len_offset > 0:
            self.context.enable_decode_mode()
        # GPTModel asserts runtime_gather_output in inference mode: its output
        # layer then gathers with gather_from_tensor_model_parallel_region.
        logits = self.model(tokens, positions, None, inference_context=self.context,
                            runtime_gather_output=True)
        self.context.sequence_len_offset += tokens.size(1)
        return logits[:, -1, :]
