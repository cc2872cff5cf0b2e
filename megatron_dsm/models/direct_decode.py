"""A module-free decode path over a megatron-core GPTModel's own weights.

Why.  For the model sizes the project samples from on a CPU (and for small
models on any device) rollout time is per-call overhead, not arithmetic:
``GPTModel.forward`` with a ``StaticInferenceContext`` goes through dozens of
module calls per layer, inference-context bookkeeping, and re-applies RoPE to
every cached key at every step; at the size of ``benchmarks/grpo_vs_trl.py``
the matrix products are a small share of a decode step
(``benchmarks/rollout_engines.py`` compares the engines).  This engine runs the
same Llama forward as plain functional torch ops over the *same parameter
tensors* (nothing is copied, so ``update_weights`` is free: the role a vLLM
engine plays in verl, without the weight sync), with a KV cache laid out for
``scaled_dot_product_attention`` and RoPE tables computed once per call.

Equivalence.  The math is megatron-core's, op for op where it matters:
RMSNorm; the fused QKV projection split per query group
([group, heads_per_group + 2, head_dim], as ``Attention.get_query_key_value_tensors``
does); RoPE from the model's own ``RotaryEmbedding`` (non-interleaved
rotate-half); GQA; the SwiGLU fc1 split into [gate, up] halves; the
vocab-parallel embedding (masked lookup + all-reduce over TP), the
row-parallel projections (all-reduce over TP) and the column-parallel output
layer (all-gather over TP).  ``tests/models/test_direct_decode.py`` checks the
logits against ``GPTModel.forward`` at TP=1 and TP=2 and the sampled tokens
against ``generation.generate``.

Scope: what ``models.gpt.build_model`` builds (local or transformer-engine
spec), PP=1, no sequence parallelism.  ``unsupported_reason`` names the first
setting outside that; ``engines.engine_for`` then falls back to the megatron-core path.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from megatron_dsm import platform
from megatron_dsm.models.generation import (GenerationError, RolloutEngine,
                                            SamplingParams, attention_mask, generate)
from megatron_dsm.models.gpt import unwrap, whole_model_reason


def _tp():
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return 1, 0, None
    return (ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank(),
            ps.get_tensor_model_parallel_group())


def unsupported_reason(model) -> Optional[str]:
    """None when ``DirectDecoder`` reproduces this model's forward, else why not."""
    why = whole_model_reason(model)
    if why:
        return why
    m = unwrap(model)
    c = m.config
    checks = [
        (c.normalization != "RMSNorm", f"normalization={c.normalization}"),
        (not c.gated_linear_unit or c.activation_func is not F.silu, "MLP is not SwiGLU"),
        (c.add_bias_linear or c.add_qkv_bias, "linear biases"),
        (getattr(c, "qk_layernorm", False), "qk layernorm"),
        (getattr(c, "multi_latent_attention", False), "multi-latent attention"),
        (getattr(c, "num_moe_experts", None), "mixture of experts"),
        (getattr(c, "rotary_interleaved", False), "interleaved RoPE"),
        (getattr(getattr(m, "rotary_pos_emb", None), "inv_freq", torch.empty(0)).numel() * 2
         != c.kv_channels, "RoPE on part of each head (rotary_percent < 1)"),
        (getattr(c, "softmax_scale", None) is not None, "custom softmax scale"),
        (getattr(c, "layernorm_zero_centered_gamma", False), "zero-centred norm gamma"),
        (getattr(c, "fp8", None), "fp8"),
    ]
    return next((why for bad, why in checks if bad), None)


@dataclasses.dataclass
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor
    wproj: torch.Tensor
    ln2: torch.Tensor
    wfc1: torch.Tensor
    wfc2: torch.Tensor


def _norm_weight(linear, norm) -> torch.Tensor:
    # TE spec: the norm is fused into the next linear (layer_norm_weight) and
    # the norm module is an IdentityOp; local spec: a separate RMSNorm.
    w = getattr(linear, "layer_norm_weight", None)
    return w if w is not None else norm.weight


class DirectDecoder:
    """Llama forward over a GPTModel's parameters; see the module docstring."""

    def __init__(self, model):
        why = unsupported_reason(model)
        if why:
            raise GenerationError(f"direct decoding does not support this model: {why}")
        self.model = unwrap(model)
        c = self.model.config
        self.eps = c.layernorm_epsilon
        self.hidden = c.hidden_size
        self.tp, self.tp_rank, self.tp_group = _tp()
        self.heads = c.num_attention_heads // self.tp
        self.groups = (c.num_query_groups or c.num_attention_heads) // self.tp
        self.head_dim = c.kv_channels
        self._rope_cache: dict = {}
        self.bind()

    def bind(self) -> None:
        """(Re)read the parameter tensors (cheap; weights are shared, not copied)."""
        m = self.model
        self.layers = []
        for layer in m.decoder.layers:
            att, mlp = layer.self_attention, layer.mlp
            self.layers.append(_Layer(
                _norm_weight(att.linear_qkv, layer.input_layernorm), att.linear_qkv.weight,
                att.linear_proj.weight, _norm_weight(mlp.linear_fc1, layer.pre_mlp_layernorm),
                mlp.linear_fc1.weight, mlp.linear_fc2.weight))
        self.final_ln = m.decoder.final_layernorm.weight
        self.embedding = m.embedding.word_embeddings.weight        # [v/tp, h]
        self.output = (m.shared_embedding_or_output_weight() if m.share_embeddings_and_output_weights
                       else m.output_layer.weight)                 # [v/tp, h]
        self.rotary = m.rotary_pos_emb

    # -- tensor-parallel collectives (no-ops at TP=1) ------------------------------
    def _all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp > 1:
            torch.distributed.all_reduce(x, group=self.tp_group)
        return x

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp == 1:
            return F.embedding(ids, self.embedding)
        part = self.embedding.size(0)
        lo = self.tp_rank * part
        outside = (ids < lo) | (ids >= lo + part)
        local = F.embedding((ids - lo).masked_fill(outside, 0), self.embedding)
        return self._all_reduce(local.masked_fill(outside[..., None], 0.0))

    def _gather_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        if self.tp == 1:
            return logits
        parts = [torch.empty_like(logits) for _ in range(self.tp)]
        torch.distributed.all_gather(parts, logits.contiguous(), group=self.tp_group)
        return torch.cat(parts, dim=-1)

    # -- one forward ------------------------------------------------------------------
    def rope_tables(self, total: int, dtype: torch.dtype):
        """RoPE as one multiply-add over the whole QKV projection: tables
        [total, 1, heads_per_group + 2, head_dim] for the slots (query heads,
        key, value) of a query group, such that
        ``rope(qkv) = qkv * cos + rotated(qkv) * sin``.

        ``rotated`` is a roll by half the head (every dimension rotates:
        ``unsupported_reason`` refuses partial rotary), and the sin table
        carries rotate-half's sign (``rotate_half(t) * sin == roll(t) *
        [-sin_lo, sin_hi]`` exactly).  The value slot gets cos 1 and sin 0,
        which leaves values exactly as they are.  One call per decode step
        and layer instead of slicing queries/keys out first, which matches
        the joint KV cache layout of ``new_cache``."""
        key = (total, dtype)
        if key not in self._rope_cache:
            freqs = self.rotary(total).reshape(total, -1)      # [total, head_dim] (fp32)
            hpg = self.heads // self.groups
            cos, sin = platform.cos_and_folded_sin(freqs, freqs.dtype)
            slots = torch.ones(hpg + 2, 1)
            slots[-1] = 0.0                                    # the value slot: cos 1, sin 0
            cos_t = (cos[:, None] * slots + (1 - slots)).to(dtype)[:, None]
            sin_t = (sin[:, None] * slots).to(dtype)[:, None]
            if len(self._rope_cache) > 16:
                self._rope_cache.clear()
            self._rope_cache[key] = (cos_t.contiguous(), sin_t.contiguous())
        return self._rope_cache[key]

    def forward(self, ids: torch.Tensor, start: int, cache: Optional[list], cos: torch.Tensor,
                sin: torch.Tensor, mask: Optional[torch.Tensor], *, last_only: bool = True,
                gather: bool = True) -> torch.Tensor:
        """Logits for ``ids`` [b, q] at columns ``start..start+q-1``.

        ``cache``: per layer one tensor [b, groups, 2, window, head_dim]
        (keys, values); this call's keys/values are written at its columns in
        one copy and attention reads columns ``0..start+q-1``.  ``None``: no
        cache (``start`` must be 0).  ``cos``/``sin``: ``rope_tables``.
        ``mask``: bool [b, 1, q, start+q], True = attend, or None for plain
        causal attention (q > 1) / every key (q == 1).  ``last_only``: logits
        of the last column only ([b, v] instead of [b, q, v]).  ``gather``:
        full vocabulary on every TP rank (else this rank's shard)."""
        b, q = ids.shape
        end = start + q
        nh, ng, hd = self.heads, self.groups, self.head_dim
        hpg = nh // ng
        cos, sin = cos[start:end], sin[start:end]
        h = self._embed(ids)
        causal = mask is None and q > 1
        for i, layer in enumerate(self.layers):
            x = F.rms_norm(h, (self.hidden,), layer.ln1, self.eps)
            qkv = F.linear(x, layer.wqkv).view(b, q, ng, hpg + 2, hd)
            # RoPE on every query head and key in one pass (values pass through)
            r = torch.addcmul(qkv * cos, torch.roll(qkv, hd // 2, dims=-1), sin)
            qh = r[:, :, :, :hpg].reshape(b, q, nh, hd).transpose(1, 2)      # [b, nh, q, hd]
            if cache is not None:
                kv = cache[i]
                kv[:, :, :, start:end] = r[:, :, :, hpg:].permute(0, 2, 3, 1, 4)
                kh, vh = kv[:, :, 0, :end], kv[:, :, 1, :end]                # [b, ng, end, hd]
            else:
                kh, vh = r[:, :, :, hpg].transpose(1, 2), r[:, :, :, hpg + 1].transpose(1, 2)
            o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, is_causal=causal,
                                               enable_gqa=ng != nh)
            h = h + self._all_reduce(F.linear(o.transpose(1, 2).reshape(b, q, nh * hd), layer.wproj))
            x = F.rms_norm(h, (self.hidden,), layer.ln2, self.eps)
            gate, up = F.linear(x, layer.wfc1).chunk(2, dim=-1)
            h = h + self._all_reduce(F.linear(F.silu(gate) * up, layer.wfc2))
        if last_only:
            h = h[:, -1]
        h = F.rms_norm(h, (self.hidden,), self.final_ln, self.eps)
        logits = F.linear(h, self.output)
        return self._gather_vocab(logits) if gather else logits

    def vocab_parallel_logits(self, tokens: torch.Tensor, real: Optional[torch.Tensor] = None):
        """[b, s, v/tp] logits of every position of ``tokens`` (this rank's
        vocabulary shard, as ``GPTModel.forward`` returns them), no KV cache;
        ``real`` [b, s] marks real tokens of a left-padded batch."""
        s = tokens.size(1)
        cos, sin = self.rope_tables(s, self.embedding.dtype)
        mask = None if real is None else prefill_mask(real.to(tokens.device, torch.bool))
        return self.forward(tokens, 0, None, cos.to(tokens.device), sin.to(tokens.device), mask,
                            last_only=False, gather=False)

    def prefill(self, prompts: torch.Tensor, real: torch.Tensor, rows: Optional[torch.Tensor],
                total: int, cos: torch.Tensor, sin: torch.Tensor, *, padded: bool,
                gather: bool = True):
        """Run each distinct prompt once and hand its keys/values to the rows
        that share it (the G samples of a GRPO group share their question).

        ``prompts`` [U, P] left-padded distinct prompts, ``real`` marks their
        real tokens; row i of the result uses prompt ``rows[i]`` (None: row i
        is prompt i).  Returns the logits of each row's last prompt position
        [N, v] (this rank's shard unless ``gather``) and a KV cache of ``total``
        columns per row, holding the prompt's columns."""
        cache = self.new_cache(prompts.size(0), total, self.embedding.dtype, prompts.device)
        mask = prefill_mask(real) if padded else None
        last = self.forward(prompts, 0, cache, cos, sin, mask, gather=gather)
        if rows is None:
            return last, cache
        return last.index_select(0, rows), [kv.index_select(0, rows) for kv in cache]

    def packed_logits(self, tokens: torch.Tensor, positions: torch.Tensor,
                      attend: torch.Tensor) -> torch.Tensor:
        """[U, L, v/tp] logits of packed sequences (``rl/packing.py``: each
        distinct prompt once, then one segment per response): ``tokens``
        [U, L], ``positions`` [L] each column's RoPE position in its own row,
        ``attend`` [U, 1, L, L] True = attend.  One forward, no KV cache,
        instead of a prompt prefill whose keys/values are copied to the G
        rows and a second forward over the responses."""
        cos, sin = self.rope_tables(int(positions.max()) + 1, self.embedding.dtype)
        pos = positions.to(cos.device)
        cos, sin = cos.index_select(0, pos), sin.index_select(0, pos)
        dev = tokens.device
        return self.forward(tokens, 0, None, cos.to(dev), sin.to(dev), attend, last_only=False,
                            gather=False)

    def new_cache(self, b: int, total: int, dtype: torch.dtype, device) -> list:
        """Per layer [b, groups, 2, total, head_dim]: keys and values side by
        side, so that one copy writes both (see ``forward``)."""
        shape = (b, self.groups, 2, total, self.head_dim)
        return [torch.empty(shape, dtype=dtype, device=device) for _ in self.layers]


class DirectStep:
    """The per-step forward ``generation.generate`` drives (prefill, then one
    token per row), with this engine's cache and masks.

    Shared prompts.  Rows come prompt-major in groups of ``n`` identical
    prompts (G samples per question), so the prefill runs on one row per
    group and its keys/values are copied to the group's other rows: 1/n of
    the prefill compute (the prompt is most of the tokens a short GRPO
    rollout processes: 70 of 110 per row in the toy demo)."""

    def __init__(self, decoder: DirectDecoder, b: int, total: int, device, n: int = 1):
        dtype = decoder.embedding.dtype
        self.dec, self.total, self.cache = decoder, total, None
        n = n if (n > 1 and b % n == 0) else 1
        self.n = n
        self.rows = torch.arange(b // n, device=device).repeat_interleave(n) if n > 1 else None
        self.cos, self.sin = decoder.rope_tables(total, dtype)
        self.cos, self.sin = self.cos.to(device), self.sin.to(device)

    def __call__(self, inp: torch.Tensor, start: int, real: torch.Tensor, need_mask: bool):
        if start == 0:
            n = self.n
            logits, self.cache = self.dec.prefill(inp[::n], real[::n], self.rows, self.total,
                                                  self.cos, self.sin, padded=need_mask)
            return logits
        mask = real[:, None, None, :] if need_mask else None
        return self.dec.forward(inp, start, self.cache, self.cos, self.sin, mask)


def prefill_mask(real: torch.Tensor) -> torch.Tensor:
    """SDPA mask [b, 1, s, s] (True = attend) for a padded batch: the
    complement of ``generation.attention_mask`` (causal over real keys), and
    a pad query also sees itself, so that no softmax row is empty (SDPA
    returns NaN there, and a NaN value times a zero weight is still NaN in
    the rows that follow)."""
    s = real.size(1)
    return ~attention_mask(real, s) | torch.eye(s, dtype=torch.bool, device=real.device)


class DirectRolloutEngine(RolloutEngine):
    """Samples from the live policy with ``DirectDecoder`` (weights shared)."""

    def __init__(self, model, *, pad_id: int = 0, vocab_size: Optional[int] = None,
                 decode: Optional[Callable[[list[int]], str]] = None):
        self.decoder = DirectDecoder(model)
        self.pad_id, self.vocab_size, self.decode = pad_id, vocab_size, decode
        self.last_tokens_per_second = 0.0

    @property
    def model(self):
        return self.decoder.model

    def update_weights(self, model) -> None:
        if unwrap(model) is not self.decoder.model:
            self.decoder = DirectDecoder(model)
        else:
            self.decoder.bind()

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams):
        out = generate(self.decoder.model, prompts, params, pad_id=self.pad_id,
                       vocab_size=self.vocab_size, decode=self.decode,
                       stepper=lambda b, total, dev: DirectStep(self.decoder, b, total, dev, params.n))
        self.last_tokens_per_second = out.tokens_per_second
        return out


def direct_by_default(model) -> bool:
    """The direct path where it supports the model and the model lives on the
    CPU (measured there; on a GPU the transformer-engine spec has not been
    checked against it yet, so megatron-core or vLLM keeps the job): what
    ``engines.auto_engine`` picks without vLLM on a GPU."""
    m = unwrap(model)
    on_cpu = all(p.device.type == "cpu" for p in m.parameters())
    return on_cpu and unsupported_reason(m) is None
