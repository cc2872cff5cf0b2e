"""Outcome and process reward models on the shared training loop.

Both are a :class:`megatron_dsm.models.value_head.ValueGPTModel` (GPTModel
backbone + scalar head) reading the chat-formatted text
``User: {question}\\n\\nAssistant: {solution}<eos>`` (the SFT template, so an
SFT or pretrained checkpoint initialises the backbone directly).

* **Outcome RM** (ORM): one score at the last token (the closing eos);
  ``sigmoid(score)`` is the probability that the final answer is right.  Trained
  with binary cross entropy on labels from the project's grader
  (``eval.grading.grade(solution, reference)``) when a record carries the
  reference answer instead of a label.
* **Process RM** (PRM, the paper's process supervision, Sec. 4.1.3 and
  Math-Shepherd): the solution is split into steps (on blank lines by default,
  ``--step-separator``); the score of step k is read at the last token of
  step k.  BCE on the step labels (hard 0/1 or soft shares in [0, 1]).

Tokenisation is segment by segment (prompt, then each step with the separator
that precedes it), so step ends are exact token positions, independent of how
a tokenizer would merge across the boundary.

Training runs on ``Trainer`` (megatron DDP, optimizer, LR schedule, the
``get_forward_backward_func`` schedule, dist checkpoints).  ``--load`` may be
any checkpoint of the loop: a reward model (resumed, or with ``--finetune``
only its weights) or a language model (backbone weights; the head starts
from its initialisation).  :class:`RewardModel` serves a trained checkpoint
in process (``score(pairs) -> tensor``) for GRPO.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.io import read_jsonl
from megatron_dsm.data.sft import ChatTemplate
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.rl import reward_metrics
from megatron_dsm.training.arguments import TrainConfig

KINDS = ("outcome", "process")
AGGREGATES = ("min", "last", "prod", "mean")


class RewardDataError(ValueError):
    """Bad reward-model data; the message says which file, line and what."""


@options
class RMConfig:
    """Reward-model options (flags and the ``rm:`` YAML section)."""

    yaml_section: ClassVar[str] = "rm"

    rm_type: str = field("outcome", choices=KINDS, help="outcome (one score per solution) or process (per step)")
    train_data: list[str] = field(default_factory=list, help="jsonl training records (see module docstring)")
    valid_data: list[str] = field(default_factory=list, help="jsonl held-out records for accuracy / AUC")
    tokenizer_type: str = field("auto", help="hf | sentencepiece | byte | auto (data/tokenizer.py)")
    tokenizer_model: str | None = field(None, help="tokenizer.json / SentencePiece .model")
    step_separator: str = field("\n\n", help="text between steps of a solution (process RM)")
    aggregate: str = field("min", choices=AGGREGATES,
                           help="process RM: one solution score from its step scores")
    grader: str = field("dsm", choices=("dsm", "math_verify"), help="grader for records with a reference answer")

    def __post_init__(self):
        if self.rm_type not in KINDS:
            raise ConfigError(f"rm: rm_type must be one of {KINDS}, got {self.rm_type!r}")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"rm: aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if not self.step_separator:
            raise ConfigError("rm: step_separator must not be empty")

    @staticmethod
    def check_pipeline(pp: int) -> None:
        """Scoring is in process (RewardModel.score), through the whole model."""
        if pp != 1:
            raise ConfigError("reward models run with --pipeline-model-parallel-size 1 (scoring is in process)")


# ---------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class RMExample:
    """One (question, solution) with a label per scored position."""

    question: str
    steps: list[str]          # outcome RM: one "step", the whole solution
    labels: list[float]       # one per step (outcome: one)


@dataclasses.dataclass
class Encoded:
    ids: list[int]
    positions: list[int]      # token index where each step's score is read
    labels: list[float]


def split_steps(solution: str, separator: str) -> list[str]:
    """Steps of a solution: the text between separators, empty pieces dropped."""
    return [s for s in (p.strip() for p in solution.split(separator)) if s]


def record_to_example(rec: dict, kind: str, cfg: RMConfig) -> RMExample:
    """A jsonl record -> RMExample; ValueError says what is wrong.

    outcome: ``{question, solution, label}`` or ``{question, solution, answer}``
    (label = grade(solution, answer)).  process: ``{question, steps: [...],
    step_labels: [...]}`` or ``{question, solution, step_labels}`` (solution
    split on the step separator)."""
    if not isinstance(rec, dict):
        raise ValueError("record must be a JSON object")
    q = rec.get("question")
    if not isinstance(q, str):
        raise ValueError("missing or non-string 'question'")
    if kind == "outcome":
        sol = rec.get("solution")
        if not isinstance(sol, str) or not sol.strip():
            raise ValueError("missing or empty 'solution'")
        if "label" in rec:
            lab = rec["label"]
            if isinstance(lab, bool) or lab in (0, 1) or (isinstance(lab, float) and 0 <= lab <= 1):
                return RMExample(q, [sol.strip()], [float(lab)])
            raise ValueError(f"'label' must be a boolean or a number in [0, 1], got {lab!r}")
        if "answer" in rec:
            from megatron_dsm.eval.grading import grade

            return RMExample(q, [sol.strip()], [float(grade(sol, str(rec["answer"]), grader=cfg.grader))])
        raise ValueError("outcome record needs 'label' or a reference 'answer' to grade against")
    steps = rec.get("steps")
    if steps is None:
        sol = rec.get("solution")
        if not isinstance(sol, str):
            raise ValueError("process record needs 'steps' (list) or 'solution' (str)")
        steps = split_steps(sol, cfg.step_separator)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise ValueError("'steps' must be a non-empty list of non-empty strings")
    labels = rec.get("step_labels")
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise ValueError(f"'step_labels' must be a list with one label per step ({len(steps)} steps)")
    out = []
    for lab in labels:
        if isinstance(lab, bool) or (isinstance(lab, (int, float)) and 0 <= lab <= 1):
            out.append(float(lab))
        else:
            raise ValueError(f"step label {lab!r} is not a boolean or a number in [0, 1]")
    return RMExample(q, [s.strip() for s in steps], out)


def read_examples(paths: Sequence[str], kind: str, cfg: RMConfig) -> list[RMExample]:
    out = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise RewardDataError(f"{p}: file not found")
        for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(record_to_example(json.loads(line), kind, cfg))
            except json.JSONDecodeError as e:
                raise RewardDataError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            except ValueError as e:
                raise RewardDataError(f"{p}:{lineno}: {e}") from None
    if not out:
        raise RewardDataError(f"{', '.join(map(str, paths))}: no records")
    return out


def encode(question: str, steps: Sequence[str], labels: Sequence[float] | None, tokenizer, *,
           separator: str = "\n\n", template: ChatTemplate | None = None,
           max_length: int | None = None) -> Encoded | None:
    """Token ids of the formatted example and the scored positions.

    Outcome (one step): the score sits on the closing eos.  Process: on the
    last token of each step.  With ``max_length`` the sample keeps the steps
    that fit (outcome: None when the whole solution does not fit)."""
    template = template or ChatTemplate()
    ids = list(tokenizer.encode(template.user.format(content=question)))
    positions, kept = [], []
    outcome = len(steps) == 1
    for k, step in enumerate(steps):
        text = template.assistant.format(content=step) if k == 0 else separator + step
        piece = list(tokenizer.encode(text))
        if not piece:
            continue
        if max_length is not None and len(ids) + len(piece) + (1 if outcome else 0) > max_length:
            break
        ids += piece
        positions.append(len(ids) - 1)
        kept.append(k)
    if not positions:
        return None
    if outcome:
        ids.append(int(tokenizer.eod))
        positions = [len(ids) - 1]
    labs = [float(labels[k]) for k in kept] if labels is not None else [0.0] * len(positions)
    return Encoded(ids, positions, labs)


def batch_tensors(items: Sequence[Encoded], seq_length: int, pad_id: int) -> dict:
    """Right-padded ``tokens [B, S]``, ``position_ids``, ``score_mask`` and
    ``targets`` (float, nonzero mask only at scored positions).  Causal
    attention needs no mask: padding sits after every scored position."""
    B = len(items)
    tok = torch.full((B, seq_length), pad_id, dtype=torch.long)
    mask = torch.zeros(B, seq_length)
    tgt = torch.zeros(B, seq_length)
    for b, e in enumerate(items):
        tok[b, :len(e.ids)] = torch.tensor(e.ids)
        mask[b, e.positions] = 1.0
        tgt[b, e.positions] = torch.tensor(e.labels)
    pos = torch.arange(seq_length).expand(B, seq_length).contiguous()
    return {"tokens": tok, "position_ids": pos, "score_mask": mask, "targets": tgt}


# ---------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------


def rm_loss_func(targets: torch.Tensor, score_mask: torch.Tensor, values: torch.Tensor):
    """Mean binary cross entropy (with logits) over the scored positions."""
    m = score_mask.reshape(-1)
    v = values.float().reshape(-1)
    t = targets.float().reshape(-1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(v, t, reduction="none")
    n = m.sum().clamp(min=1.0)
    loss = (bce * m).sum() / n
    acc = (((v > 0).float() == (t >= 0.5).float()).float() * m).sum() / n
    return loss, {"rm loss": loss.detach().clone(), "accuracy": acc.detach()}


def rm_forward_step(data_iterator, model):
    batch = next(data_iterator)
    dev = platform.device()
    values = model(batch["tokens"].to(dev), batch["position_ids"].to(dev), None)
    return values, functools.partial(rm_loss_func, batch["targets"].to(dev), batch["score_mask"].to(dev))


# ---------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------


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
        reward-model checkpoint written by :func:`train_reward_model`."""
        from megatron_dsm.models.gpt import transformer_config
        from megatron_dsm.models.value_head import build_value_model, load_weights
        from megatron_dsm import checkpoint
        from megatron_dsm.models import config as model_config

        ckpt, _ = checkpoint.find_checkpoint(load)
        common = checkpoint.read_common(load)
        rm = common.get("reward_model")
        if not rm:
            raise ConfigError(f"{ckpt}: not a reward-model checkpoint (no 'reward_model' record)")
        mcfg = model_config.from_checkpoint(load)
        if tconfig is None:
            from megatron.core import parallel_state as ps

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


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


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


def _encode_all(examples: Iterable[RMExample], tokenizer, cfg: RMConfig, seq_length: int,
                stats: dict) -> list[Encoded]:
    out = []
    for ex in examples:
        e = encode(ex.question, ex.steps, ex.labels, tokenizer, separator=cfg.step_separator,
                   max_length=seq_length)
        if e is None:
            stats["dropped_too_long"] = stats.get("dropped_too_long", 0) + 1
            continue
        out.append(e)
    if not out:
        raise RewardDataError(f"every example is longer than --seq-length {seq_length}")
    return out


def train_reward_model(train: TrainConfig, model_cfg: ModelConfig, cfg: RMConfig, *,
                       tokenizer=None) -> dict:
    """Train an outcome or process RM; returns the last logged metrics and
    the held-out evaluation (``valid ...`` keys) when valid data is given."""
    from megatron_dsm.data.tokenizer import build_tokenizer
    from megatron_dsm.models.value_head import build_value_model, checkpoint_has_head, load_weights
    from megatron_dsm.training.loop import Trainer
    from megatron_dsm.training.sft import PackOrder

    if not cfg.train_data:
        raise ConfigError("no reward-model data: give --train-data FILE.jsonl")
    cfg.check_pipeline(train.pipeline_model_parallel_size)
    train_ex = read_examples(cfg.train_data, cfg.rm_type, cfg)
    valid_ex = read_examples(cfg.valid_data, cfg.rm_type, cfg) if cfg.valid_data else []
    tokenizer = tokenizer or build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    if model_cfg.vocab_size is None:  # not given: the tokenizer's
        model_cfg.vocab_size = int(tokenizer.vocab_size)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"tokenizer vocab {tokenizer.vocab_size} > model --vocab-size {model_cfg.vocab_size}")
    stats: dict = {}
    train_enc = _encode_all(train_ex, tokenizer, cfg, model_cfg.seq_length, stats)
    valid_enc = _encode_all(valid_ex, tokenizer, cfg, model_cfg.seq_length, stats) if valid_ex else []
    pad = getattr(tokenizer, "pad", None)
    pad_id = int(tokenizer.eod if pad is None else pad)

    lm_init = bool(train.load) and not checkpoint_has_head(train.load)
    if lm_init:  # a language-model checkpoint: the Trainer must not load it as a whole
        load, train = train.load, dataclasses.replace(train, load=None)
    trainer = Trainer(train, model_cfg, model_builder=lambda mc, tc: build_value_model(mc, tc, use_te=train.use_te))
    if lm_init:
        info = load_weights(trainer.model, load)
        trainer.writer.text(f"loaded backbone from {info['loaded_from']} (value head initialised)")
    elif train.load:
        trainer.load()
    ps = trainer.ps
    dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
    trainer.writer.text(
        f"> {cfg.rm_type} reward model {train.model} TP={train.tensor_model_parallel_size} DP={dp_size}: "
        f"{len(train_enc)} train / {len(valid_enc)} valid examples, "
        f"{sum(len(e.positions) for e in train_enc)} scored positions; dropped {stats}")
    gbs = train.global_batch_size
    # same order as SFT packs: a seeded permutation per epoch, DP ranks split each global batch
    order = PackOrder(len(train_enc), global_batch=gbs, micro_batch=train.micro_batch_size,
                      dp_rank=dp_rank, dp_size=dp_size, seed=train.seed,
                      consumed_samples=trainer.consumed_samples)
    last: dict = {}
    if valid_enc and train.eval_interval:
        v = evaluate(trainer.model, valid_enc, seq_length=model_cfg.seq_length, pad_id=pad_id)
        trainer.model.train()
        last.update({f"initial valid {k}": x for k, x in v.items()})
        trainer.writer.text(" validation at iteration 0 | " + " | ".join(f"{k}: {x:.4f}" for k, x in v.items()) + " |")
    window_t0, window_n = time.perf_counter(), 0
    while trainer.iteration < train.train_iters:
        lr = trainer.current_lr()
        micro = [batch_tensors([train_enc[i] for i in mb], model_cfg.seq_length, pad_id)
                 for mb in order.microbatches()]
        result = trainer.train_step(rm_forward_step, micro)
        trainer.consumed_samples = order.consumed_samples
        window_n += 1
        it = trainer.iteration
        if it % train.log_interval == 0 or it == train.train_iters:
            elapsed = (time.perf_counter() - window_t0) / window_n
            fields = trainer.step_fields(result, lr, elapsed)
            trainer.writer.log(it, train.train_iters, fields)
            last.update(fields, iteration=it)
            window_t0, window_n = time.perf_counter(), 0
        if valid_enc and train.eval_interval and (it % train.eval_interval == 0 or it == train.train_iters):
            v = evaluate(trainer.model, valid_enc, seq_length=model_cfg.seq_length, pad_id=pad_id)
            trainer.model.train()
            last.update({f"valid {k}": x for k, x in v.items()})
            trainer.writer.text(f" validation at iteration {it} | " + " | ".join(f"{k}: {x:.4f}" for k, x in v.items()) + " |")
            window_t0 = time.perf_counter()
        if trainer.should_save():
            trainer.save(extra={"reward_model": dataclasses.asdict(cfg)})
            window_t0 = time.perf_counter()
    if train.save and trainer.iteration > 0 and not trainer.should_save():
        trainer.save(extra={"reward_model": dataclasses.asdict(cfg)})
    trainer.close()
    return last


def main(argv=None) -> int:
    from megatron_dsm.training.arguments import parse_args
    from megatron_dsm.training.loop import stage_main

    return stage_main(lambda: train_reward_model(*parse_args(argv, extra=RMConfig)),
                      RewardDataError)


# ---------------------------------------------------------------------------
# process labels: Math-Shepherd and the BiRM step-labelled format
# ---------------------------------------------------------------------------

# (question, prefix steps, n) -> n completions: the text that follows the prefix
Policy = Callable[[str, list[str], int], list[str]]
LABEL_MODES = ("hard", "soft")


def shepherd_labels(question: str, steps: Sequence[str], answer: str, policy: Policy, *, n: int,
                    mode: str = "hard", separator: str = "\n\n", grader: str = "dsm") -> list[float]:
    """Math-Shepherd step labels (Wang et al. 2023, used for the paper's
    process supervision): for each prefix ``steps[:k+1]`` the policy writes
    ``n`` completions; each full solution (prefix + completion) is graded
    against ``answer``.  Hard estimation: the step is good (1.0) when any
    completion reaches the answer.  Soft: the share that does."""
    from megatron_dsm.eval.grading import grade

    if mode not in LABEL_MODES:
        raise ConfigError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    if n < 1:
        raise ConfigError(f"samples per step must be >= 1, got {n}")
    labels = []
    for k in range(len(steps)):
        prefix = list(steps[:k + 1])
        completions = list(policy(question, prefix, n))
        if len(completions) != n:
            raise ValueError(f"policy returned {len(completions)} completions, expected {n}")
        head = separator.join(prefix)
        ok = [grade(head + (separator + c.strip() if c.strip() else ""), answer, grader=grader)
              for c in completions]
        share = sum(ok) / n
        labels.append(share if mode == "soft" else float(share > 0))
    return labels


BIRM_STEP_TAG = "ки"
BIRM_LABELS = ("step_labels", "step_h_label", "step_s_label")


def read_birm(path: str, label_key: str = "step_labels", tag: str = BIRM_STEP_TAG,
              skipped_out: list | None = None) -> list[dict]:
    """The step-labelled format of ../shared/data/process_supervision/birm:
    one problem per line with ``outputs[]``, each ``response`` a sequence of
    steps each closed by ``tag`` and one label per step under ``label_key``
    (``step_labels``; ``step_h_label`` hard or ``step_s_label`` soft
    Monte-Carlo value labels).  Returns PRM records ``{question, steps,
    step_labels, answer}``; a record whose step count disagrees with its
    labels is an error naming file, line and output.  Outputs whose labels
    are not booleans or numbers (BiRM's ``"[invalid]"``) are skipped and
    listed as ``"line:output"`` in ``skipped_out`` when given."""
    if label_key not in BIRM_LABELS:
        raise ConfigError(f"birm label key must be one of {BIRM_LABELS}, got {label_key!r}")
    p = Path(path)
    if not p.is_file():
        raise RewardDataError(f"{p}: file not found")
    out, skipped = [], []
    for lineno, rec in read_jsonl(p, error=RewardDataError):
        q = rec.get("question") or rec.get("input")
        if not isinstance(q, str) or not isinstance(rec.get("outputs"), list):
            raise RewardDataError(f"{p}:{lineno}: expected 'question' and an 'outputs' list")
        for j, o in enumerate(rec["outputs"]):
            steps = [s.strip() for s in str(o.get("response", "")).split(tag)]
            steps = [s for s in steps if s]
            labels = o.get(label_key)
            if not isinstance(labels, list) or len(labels) != len(steps):
                raise RewardDataError(f"{p}:{lineno}: outputs[{j}] has {len(steps)} steps but "
                                      f"{label_key} has {len(labels) if isinstance(labels, list) else 'no'} labels")
            if not all(isinstance(x, (bool, int, float)) for x in labels):
                # BiRM marks outputs it could not grade with the string "[invalid]"
                skipped.append(f"{lineno}:{j}")
                continue
            out.append({"question": q, "steps": steps, "step_labels": [float(x) for x in labels],
                        "answer": str(rec.get("ground_truth", ""))})
    if skipped_out is not None:
        skipped_out.extend(skipped)
    return out
