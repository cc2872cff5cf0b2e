"""A trained reward model served in process, and its held-out metrics.

``RewardModel.from_checkpoint`` builds the value model (GPTModel backbone +
scalar head, ``models.value_head``) for the current parallel state, in the
policy's precision, and loads a reward-model checkpoint; ``score(pairs)``
gives one probability per ``(question, solution)`` (GRPO's ORM / PRM
rewards call it).

``InProcessRewardModel`` is the reward model of an RL run: the checkpoint is
checked when the run's options are read (kind, vocabulary and tokenizer
fingerprint against the policy's: one ``error:`` line before any model
exists) and the model is built by ``setup(trainer)``, once the process
groups exist, sharded at the policy's TP.  With ``offload`` its weights stay
in host memory between uses (``OffloadedWeights``) and visit the accelerator
only while it scores.
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
    """Probability per scored position of each example (a collective over
    TP); the model's train/eval mode is left as it was."""
    was = model.training
    model.eval()
    out = []
    dev = platform.device()
    try:
        for s in range(0, len(encoded), batch_size):
            chunk = list(encoded[s:s + batch_size])
            L = min(seq_length, max(len(e.ids) for e in chunk))
            b = batch_tensors(chunk, L, pad_id)
            values = model(b["tokens"].to(dev), b["position_ids"].to(dev), None).float().cpu()
            for k, e in enumerate(chunk):
                out.append(torch.sigmoid(values[k, e.positions]))
    finally:
        model.train(was)
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
    def from_checkpoint(cls, load: str, tokenizer, *, tp: int | None = None, bf16: bool = False,
                        use_te: bool | None = None):
        """Build the value model at TP ``tp`` (default: the current parallel
        state's), in bf16 when asked, and load a reward-model checkpoint
        written by the reward-model stage."""
        ckpt, _ = checkpoint.find_checkpoint(load)
        rm = read_record(load)
        mcfg = model_config.from_checkpoint(load)
        tp = tp or ps.get_tensor_model_parallel_world_size()
        # weights come from the checkpoint: no initialisation pass
        tconfig = transformer_config(mcfg, tp=tp, bf16=bf16, perform_initialization=False)
        model = build_value_model(mcfg, tconfig, use_te=use_te)
        info = load_weights(model, load)
        if not info["head_loaded"]:
            raise ConfigError(f"{ckpt}: checkpoint has no value head")
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, tokenizer, kind=rm["rm_type"], seq_length=mcfg.seq_length,
                   separator=rm.get("step_separator", "\n\n"), aggregate_how=rm.get("aggregate", "min"))

    def _encode(self, pairs):
        enc = []
        for q, sol in pairs:
            steps = [sol.strip()] if self.kind == "outcome" else split_steps(sol, self.separator)
            e = encode(q, steps or [sol], None, self.tokenizer, separator=self.separator,
                       template=self.template, max_length=self.seq_length, keep_solution=True)
            if e is None:
                raise RewardDataError(f"a solution is longer than the reward model's context "
                                      f"({self.seq_length} tokens)")
            enc.append(e)
        return enc

    def score_steps(self, pairs: Sequence[tuple[str, str]]) -> list[torch.Tensor]:
        return step_scores(self.model, self._encode(pairs), seq_length=self.seq_length, pad_id=self.pad_id)

    def score(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        return self.combine(self.score_steps(pairs))

    def combine(self, per: Sequence[torch.Tensor]) -> torch.Tensor:
        """One score per solution from ``score_steps``' output."""
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


# ---------------------------------------------------------------------------
# the reward model of an RL run
# ---------------------------------------------------------------------------

KIND_OF_REWARD = {"orm": "outcome", "mixed": "outcome", "prm": "process"}


def read_record(load: str) -> dict:
    """The ``reward_model`` record of a reward-model checkpoint (kind, step
    separator, aggregate, tokenizer fingerprint); ConfigError if it has none."""
    common = checkpoint.read_common(load)
    rec = common.get("reward_model")
    if not rec:
        ckpt, _ = checkpoint.find_checkpoint(load)
        raise ConfigError(f"{ckpt}: not a reward-model checkpoint (no 'reward_model' record)")
    return rec


def check_reward_checkpoint(load: str, *, reward: str, tokenizer, vocab_size: int | None) -> dict:
    """What ``--reward REWARD --reward-model LOAD`` needs, checked from the
    checkpoint's common state alone (no model is built): the kind the reward
    takes (orm and mixed: outcome; prm: process), the policy's tokenizer
    (fingerprint) and vocabulary.  Returns the record; ConfigError says what
    differs."""
    ckpt, _ = checkpoint.find_checkpoint(load)
    rec = read_record(load)
    want, got = KIND_OF_REWARD[reward], rec.get("rm_type")
    if got != want:
        other = "prm" if got == "process" else "orm (or mixed)"
        raise ConfigError(f"--reward {reward} takes {_a(want)} reward model, but {ckpt} is {_a(got)} "
                          f"reward model (use --reward {other})")
    fp = rec.get("tokenizer_fingerprint")
    if fp is None:
        raise ConfigError(f"{ckpt}: the reward model records no tokenizer fingerprint; train it with "
                          f"tools/train_reward_model.py, which records it")
    if fp != tokenizer.fingerprint:
        raise ConfigError(f"{ckpt}: reward model tokenizer (fingerprint {fp[:12]}) differs from the "
                          f"policy's ({tokenizer.fingerprint[:12]}, {tokenizer.kind})")
    rm_vocab = model_config.from_checkpoint(load).vocab_size
    if vocab_size is not None and rm_vocab != vocab_size:
        raise ConfigError(f"{ckpt}: reward model vocabulary {rm_vocab} differs from the policy's "
                          f"--vocab-size {vocab_size}")
    return rec


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


class OffloadedWeights:
    """A frozen model's parameters and buffers kept in host memory between
    uses: ``park`` moves them off the accelerator (the module then holds
    empty tensors), ``unpark`` brings them back.  On a CPU-only host the
    host copy is the tensor itself; the module still holds nothing between
    uses, which is what tests observe."""

    def __init__(self, model):
        self.model = model
        self.device = platform.device()
        self.host: dict[str, torch.Tensor] = {}
        self.moves = 0

    def _tensors(self):
        seen = set()
        for name, t in list(self.model.named_parameters()) + list(self.model.named_buffers()):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                yield name, t

    def resident_bytes(self) -> int:
        """Bytes the module's tensors hold now (0 while parked)."""
        return sum(t.numel() * t.element_size() for _, t in self._tensors())

    @torch.no_grad()
    def park(self) -> None:
        for name, t in self._tensors():
            data = t.data
            self.host[name] = data if data.device.type == "cpu" else data.to("cpu", copy=True)
            t.data = torch.empty(0, dtype=data.dtype, device=data.device)
        self.moves += 1

    @torch.no_grad()
    def unpark(self) -> None:
        for name, t in self._tensors():
            h = self.host.pop(name)
            t.data = h if h.device == self.device else h.to(self.device, non_blocking=True)
        self.moves += 1


class InProcessRewardModel:
    """The reward model of an RL run (see the module docstring): checked at
    construction, built by ``setup(trainer)`` at the policy's TP and
    precision, scored in process; ``serve(model)`` makes it score with
    another value model (iterative RL's reward model in training)."""

    def __init__(self, load: str, tokenizer, *, reward: str, vocab_size: int | None,
                 offload: bool = False):
        self.record = check_reward_checkpoint(load, reward=reward, tokenizer=tokenizer,
                                              vocab_size=vocab_size)
        self.load, self.tokenizer, self.offload = load, tokenizer, offload
        self.kind = self.record["rm_type"]
        self.separator = self.record.get("step_separator", "\n\n")
        self.rm: RewardModel | None = None
        self.parked: OffloadedWeights | None = None
        self._last: tuple | None = None

    def setup(self, trainer) -> None:
        """Build the model beside ``trainer``'s policy (once)."""
        if self.rm is not None:
            return
        t = trainer.train_cfg
        self.rm = RewardModel.from_checkpoint(self.load, self.tokenizer, tp=t.tensor_model_parallel_size,
                                              bf16=trainer.bf16, use_te=t.use_te)
        if self.offload:
            self.parked = OffloadedWeights(self.rm.model)
            self.parked.park()

    def serve(self, model) -> None:
        """Score with ``model`` (a value model of the checkpoint's
        architecture, e.g. the reward model's own trainer's) instead of
        building one in ``setup``."""
        if self.offload:
            raise ConfigError("an offloaded reward model cannot serve a model in training")
        self.rm = RewardModel(model, self.tokenizer, kind=self.kind,
                              seq_length=model_config.from_checkpoint(self.load).seq_length,
                              separator=self.separator, aggregate_how=self.record.get("aggregate", "min"))

    def forget(self) -> None:
        """Drop the kept scores (the weights changed)."""
        self._last = None

    def _run(self, fn, pairs):
        if self.rm is None:
            raise RuntimeError("the reward model is built by setup(trainer) (RLStage.setup)")
        if self.parked is None:
            return fn(pairs)
        self.parked.unpark()
        try:
            return fn(pairs)
        finally:
            self.parked.park()

    def score(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        return self.rm.combine(self.score_steps(pairs))

    def score_steps(self, pairs: Sequence[tuple[str, str]]) -> list[torch.Tensor]:
        """Step probabilities of each pair.  The last call's answer is kept:
        a rollout scored by a process RM asks for the solution scores and
        then for the step scores of the same pairs, one forward pass."""
        key = tuple(pairs)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        out = self._run(lambda p: self.rm.score_steps(p), pairs)
        self._last = (key, out)
        return out
