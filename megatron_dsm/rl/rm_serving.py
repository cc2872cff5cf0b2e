"""A trained reward model served in process, and its held-out metrics.

``RewardModel.from_checkpoint`` builds the value model (GPTModel backbone +
scalar head, ``models.value_head``) for the current parallel state and loads
a reward-model checkpoint; ``score(pairs)`` gives one probability per
``(question, solution)`` (GRPO's ORM / PRM rewards call it).
"""

from __future__ import annotations

from typing import Sequence

import torch
from megatron.core import parallel_state as ps

from megatron_dsm import checkpoint, platform
from megatron_dsm.config import ConfigError
from megatron_dsm.data.sft import ChatTemplate
from megatron_dsm.models import config as model_config
from megatron_dsm.models.gpt import transformer_config
from megatron_dsm.models.value_head import build_value_model, load_weights
from megatron_dsm.rl import reward_metrics
from megatron_dsm.rl.rm_data import KINDS, Encoded, RewardDataError, batch_tensors, encode, split_steps

AGGREGATES = ("min", "last", "prod", "mean")


@torch.no_grad()
def step_scores(model, encoded: Sequence[Encoded], *, seq_length: int, pad_id: int,
                batch_size: int = 16) -> list[torch.Tensor]:
    """Probability per scored position of each example (a collective over TP)."""
    model.eval()
    out = []
    dev = platform.device()
    for s in range(0, len(encoded), batch_size):
        chunk = list(encoded[s:s + batch_size])
        L = min(seq_length, max(len(e.ids) for e in chunk))
        b = batch_tensors(chunk, L, pad_id)
        values = model(b["tokens"].to(dev), b["position_ids"].to(dev), None).float().cpu()
        for k, e in enumerate(chunk):
            out.append(torch.sigmoid(values[k, e.positions]))
    return out


def aggregate(step_probs: torch.Tensor, how: str) -> torch.Tensor:
    """One solution score from its step scores (PRM): min (weakest step),
    last, product, or mean."""
    if how == "min":
        return step_probs.min()
    if how == "last":
        return step_probs[-1]
    if how == "prod":
        return step_probs.prod()
    if how == "mean":
        return step_probs.mean()
    raise ValueError(f"unknown aggregate {how!r}; choose from {AGGREGATES}")


class RewardModel:
    """A reward model served in process (e.g. inside GRPO).

    ``score(pairs)`` takes ``(question, solution)`` pairs and returns a float
    tensor ``[N]`` of probabilities (outcome: of a correct final answer;
    process: the aggregate of its step scores).  ``score_steps(pairs)`` gives a
    process RM's per-step probabilities.  All ranks of a TP group call it
    together."""

    def __init__(self, model, tokenizer, *, kind: str, seq_length: int,
                 separator: str = "\n\n", aggregate_how: str = "min", template: ChatTemplate | None = None):
        if kind not in KINDS:
            raise ConfigError(f"reward model kind must be one of {KINDS}, got {kind!r}")
        self.model, self.tokenizer, self.kind = model, tokenizer, kind
        self.seq_length, self.separator, self.aggregate_how = seq_length, separator, aggregate_how
        self.template = template or ChatTemplate()
        pad = getattr(tokenizer, "pad", None)
        self.pad_id = int(tokenizer.eod if pad is None else pad)

    @classmethod
    def from_checkpoint(cls, load: str, tokenizer, *, tconfig=None, use_te: bool | None = None):
        """Build the value model for the current parallel state and load a
        reward-model checkpoint written by the reward-model stage."""
        ckpt, _ = checkpoint.find_checkpoint(load)
        common = checkpoint.read_common(load)
        rm = common.get("reward_model")
        if not rm:
            raise ConfigError(f"{ckpt}: not a reward-model checkpoint (no 'reward_model' record)")
        mcfg = model_config.from_checkpoint(load)
        if tconfig is None:
            tconfig = transformer_config(mcfg, tp=ps.get_tensor_model_parallel_world_size())
        model = build_value_model(mcfg, tconfig, use_te=use_te)
        info = load_weights(model, load)
        if not info["head_loaded"]:
            raise ConfigError(f"{ckpt}: checkpoint has no value head")
        return cls(model, tokenizer, kind=rm["rm_type"], seq_length=mcfg.seq_length,
                   separator=rm.get("step_separator", "\n\n"), aggregate_how=rm.get("aggregate", "min"))

    def _encode(self, pairs):
        enc = []
        for q, sol in pairs:
            steps = [sol.strip()] if self.kind == "outcome" else split_steps(sol, self.separator)
            e = encode(q, steps or [sol], None, self.tokenizer, separator=self.separator,
                       template=self.template, max_length=self.seq_length)
            if e is None:
                raise RewardDataError(f"question+solution longer than the RM context ({self.seq_length} tokens)")
            enc.append(e)
        return enc

    def score_steps(self, pairs: Sequence[tuple[str, str]]) -> list[torch.Tensor]:
        return step_scores(self.model, self._encode(pairs), seq_length=self.seq_length, pad_id=self.pad_id)

    def score(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        per = self.score_steps(pairs)
        if self.kind == "outcome":
            return torch.stack([p[-1] for p in per])
        return torch.stack([aggregate(p, self.aggregate_how) for p in per])


def evaluate(model, encoded: Sequence[Encoded], *, seq_length: int, pad_id: int) -> dict:
    """Accuracy (threshold 0.5), AUC and mean BCE over all scored positions."""
    probs = step_scores(model, encoded, seq_length=seq_length, pad_id=pad_id)
    p = torch.cat(probs).double()
    y = torch.tensor([lab for e in encoded for lab in e.labels], dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy(p.clamp(1e-7, 1 - 1e-7), y).item()
    out = {"accuracy": reward_metrics.accuracy(p.numpy(), y.numpy()), "bce": bce, "positions": int(y.numel())}
    if 0 < int((y >= 0.5).sum()) < y.numel():
        out["auc"] = reward_metrics.auc(p.numpy(), y.numpy())
    return out
