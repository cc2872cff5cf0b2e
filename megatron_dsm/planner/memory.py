"""Memory per GPU of a stage at a layout: an estimate from shapes, not a measurement.

Notation: L layers, h hidden, f FFN (SwiGLU), a heads, g query groups
(KV heads), d = h / a head dim, v the padded vocabulary, s the sequence, b
the micro batch, t = TP, p = PP, m micro-batches per step, DP data parallel.

Model states (bytes per parameter on the GPU), as the training loop sets up
megatron-core (``grad_reduce_in_fp32=True``, its mixed-precision optimizer):
bf16 weights 2, fp32 gradient buffer 4, fp32 master weights and Adam m, v
12 (fp32 training: weights 4, gradients 4, Adam 8).  The distributed
optimizer shards the optimizer part over DP (Megatron-LM's
docs/distrib_optimizer.md: 6 + 12/DP bytes); the gradient buffer stays whole.

Parameters on the fullest GPU: L/p layers of (attention + MLP)/t plus the two
RMSNorm weights (replicated over TP), the embedding v·h/t on the first
pipeline stage, the output layer v·h/t and the final norm on the last.  The
counts come from ``ModelConfig.num_parameters`` (one formula for the repo).

Activations kept for backward, per layer and micro-batch (Korthikanti et al.
2022, "Reducing Activation Recomputation in Large Transformer Models", redone
for Llama: SwiGLU, RMSNorm, no dropout, no biases), in elements per token:

    RMSNorm inputs 2h, QKV and FC1 inputs (norm outputs) 2h   -> 4h  (/t with sequence parallel)
    q h/t, k and v 2gd/t, attention output h/t, FC1 out (gate, up) 2f/t, FC2 input f/t
    per layer = s·b·(4h/[t if SP] + (2h + 2gd + 3f)/t) x 2 bytes (bf16)

plus a·s²·b/t softmax probabilities when attention is not fused (local
spec) and not recomputed (selective recompute); flash/fused attention (TE)
keeps only O(s) statistics.  Full recompute keeps each layer's input
s·b·h (/t with SP) and rebuilds one layer at a time (``uniform`` with k
layers per group: one input per group, k layers rebuilt at once; ``block``
with n: n layers recomputed, the others kept whole).  Under 1F1B the first stage holds min(p, m) micro-batches
of its L/p layers, the last stage one.  The loss keeps the logits: bf16
s·b·v/t plus the fp32 copy the vocab-parallel cross entropy saves (RL's
log-probs also clone it: 10 bytes per logit).

RL adds, per rank: the KV cache of the rollout batch, L x 2 x rows x s x
(g/t) x d x 2 bytes (rows = B/DP x G, or the rollout batch; t is vLLM's own
TP with the vllm engine, and a KV budget caps it); with vLLM (``vllm``, or
``auto``, which picks it on a GPU where it is installed) its own copy of the
weights, params x 2 bytes / vLLM TP, during rollouts; one layer's
prefill working set rows x prompt x (3h + 3f/t) x 2 bytes; the last
column's full-vocabulary logits rows x v x 10 bytes; the reference model's
bf16 weights (only during its pass with ``offload_reference``); a reward
model's weights (reward orm/prm/mixed; only while scoring the rollout with
``offload_reward_model``; with in-process RM updates, its whole training
state); PPO's critic states.  With ``offload_training_state`` the policy's
gradients and optimizer state are off the GPU during rollouts.
"""

from __future__ import annotations

import dataclasses
import os

from megatron_dsm.models.config import ModelConfig, from_checkpoint
from megatron_dsm.planner.stages import Facts, Layout, Recipe

GiB = 1024 ** 3


@dataclasses.dataclass
class Estimate:
    """Bytes per component and column (a pipeline stage or an RL phase)."""

    columns: tuple[str, ...]
    rows: list[tuple[str, dict[str, int]]] = dataclasses.field(default_factory=list)
    params: int = 0              # parameters of the trained model on the fullest GPU

    def add(self, name: str, values: dict[str, int]) -> None:
        if any(values.values()):
            self.rows.append((name, values))

    def total(self, column: str) -> int:
        return sum(v.get(column, 0) for _, v in self.rows)

    @property
    def peak(self) -> tuple[str, int]:
        return max(((c, self.total(c)) for c in self.columns), key=lambda x: x[1])


def stage_params(model: ModelConfig, tp: int, pp: int, *, value_head: bool = False) -> dict[str, int]:
    """Parameters per GPU on the first and last pipeline stage ("all" when PP = 1)."""
    h, L, v = model.hidden_size, model.num_layers, model.padded_vocab_size(tp)
    untied = model.untie_embeddings_and_output_weights
    embedding = v * h * (2 if untied else 1)
    per_layer = (model.num_parameters(tp) - embedding - h) // L
    norms = 2 * h
    layers = L // pp * ((per_layer - norms) // tp + norms)
    emb = v * h // tp
    if value_head:
        head = h + 1                  # the value head replaces the output layer
    elif untied or pp > 1:
        head = emb                    # output layer (tied: a copy on the last stage)
    else:
        head = 0                      # tied at PP = 1: the embedding is the output layer
    if pp == 1:
        return {"all": layers + emb + head + h}
    return {"first": layers + emb, "last": layers + head + h}


def width(recipe: Recipe) -> int:
    """Bytes of a weight or activation element: bf16 on GPU unless the recipe says fp32."""
    return 2 if recipe.bf16 else 4


def state_bytes(params: int, *, bf16: bool, distributed: bool, dp: int) -> tuple[int, int, int]:
    """(weights, gradient buffer, optimizer) bytes of a trained model's ``params``."""
    weights = params * (2 if bf16 else 4)
    grads = params * 4
    optimizer = params * (12 if bf16 else 8)
    if distributed:
        optimizer = -(-optimizer // dp)
    return weights, grads, optimizer


def layer_activation_bytes(model: ModelConfig, recipe: Recipe, tp: int, tokens: int, *,
                           seq: int, selective: bool = False) -> int:
    """Bytes one layer keeps for backward over ``tokens`` = s·b tokens
    (formula above); ``selective`` recompute drops the unfused softmax."""
    h, f = model.hidden_size, model.ffn_hidden_size
    gd = model.kv_heads * (h // model.num_attention_heads)
    replicated = 4 * h / (tp if recipe.train.sequence_parallel else 1)
    elems = tokens * (replicated + (2 * h + 2 * gd + 3 * f) / tp)
    if not recipe.flash_attention and not selective:
        elems += model.num_attention_heads * seq * tokens / tp
    return int(elems * width(recipe))


def recompute_bytes(model: ModelConfig, recipe: Recipe, tp: int, tokens: int) -> int:
    """Bytes one layer keeps under full recompute: its input."""
    split = tp if recipe.train.sequence_parallel else 1
    return int(tokens * model.hidden_size * width(recipe) / split)


def forward_working_bytes(recipe: Recipe, tp: int, tokens: int) -> int:
    """One layer's live tensors in a forward without grad: residual, norm
    output and layer output 3h, the MLP's gate/up and product 3f/t."""
    m = recipe.model
    return int(tokens * (3 * m.hidden_size + 3 * m.ffn_hidden_size / tp) * width(recipe))


def activation_bytes(recipe: Recipe, layout: Layout, in_flight: int) -> int:
    """Activations of the trained model on a stage holding ``in_flight``
    micro-batches.  Full recompute as megatron-core runs it: ``uniform`` with
    k layers per group keeps each group's input and rebuilds one group (k
    layers) at a time; ``block`` recomputes the first n layers of the stage
    (their inputs kept, rebuilt one at a time) and keeps the rest whole."""
    model, tp = recipe.model, layout.tp
    s = model.seq_length
    tokens = s * layout.micro_batch
    layers = model.num_layers // layout.pp
    selective = recipe.train.recompute_granularity == "selective" and not layout.recompute
    full = layer_activation_bytes(model, recipe, tp, tokens, seq=s, selective=selective)
    if not layout.recompute:
        return in_flight * layers * full
    inp, k = recompute_bytes(model, recipe, tp, tokens), layout.recompute_num_layers
    if layout.recompute_method == "uniform":
        return in_flight * -(-layers // k) * inp + k * full
    n = min(k, layers)
    return in_flight * (n * inp + (layers - n) * full) + (full if n else 0)


def logits_bytes(recipe: Recipe, layout: Layout, facts: Facts) -> int:
    """bf16 logits of a micro-batch plus the fp32 copies the loss keeps."""
    if recipe.stage == "rm":
        return 0
    per_logit = width(recipe) + (8 if recipe.stage == "rl" else 4)
    return recipe.model.seq_length * layout.micro_batch * facts.padded_vocab // layout.tp * per_logit


def add_states(est: Estimate, label: str, params: dict[str, int], recipe: Recipe,
               layout: Layout, facts: Facts, columns: dict[str, str],
               parked: tuple[str, ...] = ()) -> None:
    """Weights, gradient buffer and optimizer rows of a trained model;
    ``columns`` maps each estimate column to a key of ``params``; in the
    ``parked`` columns gradients and optimizer state are off the GPU."""
    parts = {c: state_bytes(params[k], bf16=recipe.bf16, distributed=layout.distributed_optimizer,
                            dp=facts.dp) for c, k in columns.items()}
    dtype = "bf16" if recipe.bf16 else "fp32"
    opt = "fp32 master + Adam m, v" if recipe.bf16 else "Adam m, v"
    shard = f", sharded over DP={facts.dp}" if layout.distributed_optimizer else ""
    off = f"; off the GPU in {', '.join(parked)}" if parked else ""
    est.add(f"{label}weights ({dtype})", {c: p[0] for c, p in parts.items()})
    est.add(f"{label}gradients (fp32 buffer{off})",
            {c: p[1] for c, p in parts.items() if c not in parked})
    est.add(f"{label}optimizer ({opt}{shard}{off})",
            {c: p[2] for c, p in parts.items() if c not in parked})


def estimate(recipe: Recipe, layout: Layout, facts: Facts) -> Estimate:
    """Memory per GPU of ``recipe`` at ``layout`` (a valid one: see ``stages.check``)."""
    if recipe.stage == "rl":
        return estimate_rl(recipe, layout, facts)
    params = stage_params(recipe.model, layout.tp, layout.pp, value_head=recipe.stage == "rm")
    columns = {"all": "per GPU"} if layout.pp == 1 else {"first": "first stage", "last": "last stage"}
    est = Estimate(tuple(columns.values()), params=max(params.values()))
    add_states(est, "", params, recipe, layout, facts, {c: k for k, c in columns.items()})
    in_flight = {"all": 1, "first": min(layout.pp, facts.num_microbatches), "last": 1}
    est.add(activation_label(recipe, layout),
            {c: activation_bytes(recipe, layout, in_flight[k]) for k, c in columns.items()})
    last = columns.get("last", "per GPU")
    est.add("logits (bf16 + fp32 for the loss)", {last: logits_bytes(recipe, layout, facts)})
    return est


def activation_label(recipe: Recipe, layout: Layout) -> str:
    layers = recipe.model.num_layers // layout.pp
    k = layout.recompute_num_layers
    if not layout.recompute:
        how = "kept for backward" + (", selective recompute"
                                     if recipe.train.recompute_granularity == "selective" else "")
    elif layout.recompute_method == "uniform":
        how = (f"full recompute: layer inputs + 1 layer" if k == 1
               else f"full recompute: inputs of groups of {k} + 1 group")
    else:
        how = f"full recompute of {min(k, layers)} layers (block)"
    return f"activations ({layers} layers, micro batch {layout.micro_batch}, {how})"


def reward_model_config(recipe: Recipe) -> ModelConfig:
    """The reward model's shape: its checkpoint's, else the policy's (stated in the report)."""
    path = recipe.rl.reward_model
    if path and os.path.isdir(path):
        return from_checkpoint(path)
    return recipe.model


def estimate_rl(recipe: Recipe, layout: Layout, facts: Facts) -> Estimate:
    """Per-phase memory of the RL stage: rollout, reference pass, policy update."""
    rl = recipe.rl
    has_ref = rl.beta > 0 and rl.algorithm in ("grpo", "ppo")
    cols = ("rollout", "reference", "train") if has_ref else ("rollout", "train")
    params = stage_params(recipe.model, layout.tp, 1)["all"]
    est = Estimate(cols, params=params)
    add_states(est, "policy ", {"all": params}, recipe, layout, facts, {c: "all" for c in cols},
               parked=("rollout",) if rl.offload_training_state else ())
    add_rollout(est, recipe, layout, facts)
    frozen = params * width(recipe)
    if has_ref:
        where = {"reference": frozen} if rl.offload_reference else dict.fromkeys(cols, frozen)
        note = "on the GPU for its pass only" if rl.offload_reference else "resident"
        est.add(f"reference weights ({note})", where)
        tokens = recipe.model.seq_length * layout.micro_batch
        est.add("reference forward (1 layer + logits)",
                {"reference": forward_working_bytes(recipe, layout.tp, tokens)
                 + logits_bytes(recipe, layout, facts)})
    if rl.algorithm == "rft":
        est.add("initial model weights (RFT)", dict.fromkeys(cols, frozen))
    add_rl_models(est, recipe, layout, facts, cols)
    est.add(activation_label(recipe, layout), {"train": activation_bytes(recipe, layout, 1)})
    est.add("logits (bf16 + fp32 log-probs)", {"train": logits_bytes(recipe, layout, facts)})
    return est


def uses_vllm(recipe: Recipe) -> bool:
    """vllm, or auto: what ``auto`` picks on a GPU where vLLM is installed (the Docker image)."""
    return recipe.rl.rollout_engine in ("vllm", "auto")


def add_rollout(est: Estimate, recipe: Recipe, layout: Layout, facts: Facts) -> None:
    """The engine's own weights (vLLM), KV cache, prefill working set and
    sampling logits of the rows sampled at once."""
    rl, model, tp, w = recipe.rl, recipe.model, layout.tp, width(recipe)
    if uses_vllm(recipe):
        tp = rl.vllm_tensor_parallel_size
        est.add(f"vLLM weights ({'bf16' if recipe.bf16 else 'fp32'}, vLLM TP={tp}; freed outside rollouts)",
                {"rollout": model.num_parameters(layout.tp) * w // tp})
    rows = layout.rollout_batch or facts.rows_per_rank
    s = model.seq_length
    prompt = max(s - rl.max_new_tokens, 1)
    d = model.hidden_size // model.num_attention_heads
    kv = model.num_layers * 2 * rows * s * max(model.kv_heads // tp, 1) * d * w
    budget = f"{rows} rows x {s} tokens"
    if rl.rollout_kv_cache_gib:
        kv = min(kv, int(rl.rollout_kv_cache_gib * GiB))
        budget += f", at most the {rl.rollout_kv_cache_gib:g} GiB budget"
    est.add(f"KV cache ({budget})", {"rollout": kv})
    est.add(f"prefill working set ({rows} rows x {prompt} prompt tokens, 1 layer)",
            {"rollout": forward_working_bytes(recipe, tp, rows * prompt)})
    est.add("sampling logits (full vocabulary, last column)",
            {"rollout": rows * facts.padded_vocab * (w + 8)})


def add_rl_models(est: Estimate, recipe: Recipe, layout: Layout, facts: Facts,
                  cols: tuple[str, ...]) -> None:
    """The reward model and PPO's critic, resident through every phase."""
    rl = recipe.rl
    if rl.reward in ("orm", "prm", "mixed"):
        rm = stage_params(reward_model_config(recipe), layout.tp, 1, value_head=True)["all"]
        if rl.rm_update_iters:
            add_states(est, "reward model ", {"all": rm}, recipe, layout, facts,
                       {c: "all" for c in cols})
        elif rl.offload_reward_model:    # on the GPU only to score the rollout
            est.add("reward model weights (scoring only)", {"rollout": rm * width(recipe)})
        else:
            est.add("reward model weights", dict.fromkeys(cols, rm * width(recipe)))
    if rl.algorithm == "ppo":
        critic = stage_params(recipe.model, layout.tp, 1, value_head=True)["all"]
        add_states(est, "critic ", {"all": critic}, recipe, layout, facts, {c: "all" for c in cols})
