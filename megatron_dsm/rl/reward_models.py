"""Outcome and process reward models as a stage of ``Trainer.fit``.

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

The parts: records and batches in ``rl.rm_data``, serving a trained model
(``RewardModel``) in ``rl.rm_serving``, Math-Shepherd / BiRM labels in
``rl.prm_labels``.  ``--load`` may be any checkpoint of the loop: a reward
model (resumed, or with ``--finetune`` only its weights) or a language model
(backbone weights; the head starts from its initialisation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.value_head import build_value_model, checkpoint_has_head, load_weights
from megatron_dsm.rl.rm_data import (KINDS, RewardDataError, batch_tensors, encode_all, examples_from_records,
                                     read_examples)
from megatron_dsm.rl.rm_serving import AGGREGATES, evaluate
from megatron_dsm.training.arguments import TrainConfig, parse_args
from megatron_dsm.training.loop import Trainer
from megatron_dsm.training.sft import PackOrder
from megatron_dsm.training.stage import BatchStage, loss_count, mean_metric, stage_main


@options
class RMConfig:
    """Reward-model options (flags and the ``rm:`` YAML section)."""

    yaml_section: ClassVar[str] = "rm"

    rm_type: str = field("outcome", choices=KINDS, help="outcome (one score per solution) or process (per step)")
    train_data: list[str] = field(default_factory=list, help="jsonl training records (formats: rl/rm_data.py)")
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
# loss
# ---------------------------------------------------------------------------


def rm_loss_func(targets: torch.Tensor, score_mask: torch.Tensor, values: torch.Tensor):
    """Binary cross entropy (with logits) summed over the scored positions,
    with their count: the loop divides by the positions of the whole global
    batch, so every scored step weighs the same however examples with many
    or few steps fall into micro-batches."""
    m = score_mask.reshape(-1)
    v = values.float().reshape(-1)
    t = targets.float().reshape(-1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(v, t, reduction="none")
    n = m.sum()
    total = (bce * m).sum()
    right = (((v > 0).float() == (t >= 0.5).float()).float() * m).sum()
    return total, loss_count(n), {"rm loss": mean_metric(total, n), "accuracy": mean_metric(right, n)}


def rm_forward_step(data_iterator, model):
    batch = next(data_iterator)
    dev = platform.device()
    values = model(batch["tokens"].to(dev), batch["position_ids"].to(dev), None)
    return values, functools.partial(rm_loss_func, batch["targets"].to(dev), batch["score_mask"].to(dev))


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


class RewardModelStage(BatchStage):
    """Trains a reward model on labelled (question, solution) records."""

    eval_title = "validation"
    eval_prefix = "valid "
    forward_step = staticmethod(rm_forward_step)

    def __init__(self, train: TrainConfig, model_cfg: ModelConfig, cfg: RMConfig, *, tokenizer=None,
                 records: Sequence[dict] | None = None):
        """Reads, labels and encodes the data (``cfg.train_data``, or the
        jsonl-shaped ``records`` given in memory) before any process group
        exists."""
        if not cfg.train_data and records is None:
            raise ConfigError("no reward-model data: give --train-data FILE.jsonl")
        cfg.check_pipeline(train.pipeline_model_parallel_size)
        self.train, self.model_cfg, self.cfg = train, model_cfg, cfg
        kw = dict(separator=cfg.step_separator, grader=cfg.grader)
        train_ex = (read_examples(cfg.train_data, cfg.rm_type, **kw) if records is None
                    else examples_from_records(records, cfg.rm_type, **kw))
        valid_ex = read_examples(cfg.valid_data, cfg.rm_type, **kw) if cfg.valid_data else []
        tokenizer = tokenizer or build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
        if model_cfg.vocab_size is None:  # not given: the tokenizer's
            model_cfg.vocab_size = int(tokenizer.vocab_size)
        if tokenizer.vocab_size > model_cfg.vocab_size:
            raise ConfigError(f"tokenizer vocab {tokenizer.vocab_size} > model --vocab-size {model_cfg.vocab_size}")
        self.stats: dict = {}
        enc = dict(separator=cfg.step_separator, seq_length=model_cfg.seq_length, stats=self.stats)
        self.train_enc = encode_all(train_ex, tokenizer, **enc)
        self.valid_enc = encode_all(valid_ex, tokenizer, **enc) if valid_ex else []
        pad = getattr(tokenizer, "pad", None)
        self.pad_id = int(tokenizer.eod if pad is None else pad)
        self.tokenizer_fingerprint = tokenizer.fingerprint
        # A language-model checkpoint gives the backbone only: the trainer must
        # not load it as a whole (``setup`` loads it), so it gets no --load.
        self.lm_init = bool(train.load) and not checkpoint_has_head(train.load)
        self.train_cfg = dataclasses.replace(train, load=None) if self.lm_init else train
        self.order = None

    def build_model(self, model_cfg: ModelConfig, tconfig):
        return build_value_model(model_cfg, tconfig, use_te=self.train.use_te)

    def setup(self, trainer) -> None:
        if self.lm_init:
            info = load_weights(trainer.model, self.train.load)
            trainer.writer.text(f"loaded backbone from {info['loaded_from']} (value head initialised)")

    def start(self, trainer) -> None:
        # the order of SFT packs: a seeded permutation per epoch, DP ranks split each global batch
        t = self.train
        self.order = PackOrder(len(self.train_enc), global_batch=t.global_batch_size,
                               micro_batch=t.micro_batch_size, dp_rank=trainer.ps.get_data_parallel_rank(),
                               dp_size=trainer.ps.get_data_parallel_world_size(), seed=t.seed,
                               consumed_samples=trainer.consumed_samples)

    def banner(self, trainer) -> str:
        t = self.train
        return (f"> {self.cfg.rm_type} reward model {t.model} TP={t.tensor_model_parallel_size} "
                f"DP={trainer.ps.get_data_parallel_world_size()}: {len(self.train_enc)} train / "
                f"{len(self.valid_enc)} valid examples, "
                f"{sum(len(e.positions) for e in self.train_enc)} scored positions; dropped {self.stats}")

    def microbatches(self, trainer) -> list:
        return [batch_tensors([self.train_enc[i] for i in mb], self.model_cfg.seq_length, self.pad_id)
                for mb in self.order.microbatches()]

    def eval_interval(self, trainer) -> int | None:
        return self.train.eval_interval if self.train.eval_interval and self.valid_enc else None

    def evaluate(self, trainer) -> dict:
        """Accuracy, AUC and BCE over the held-out scored positions."""
        out = evaluate(trainer.model, self.valid_enc, seq_length=self.model_cfg.seq_length, pad_id=self.pad_id)
        trainer.model.train()
        return out

    def state_dict(self) -> dict:
        # what RewardModel.from_checkpoint reads back (kind, separator, aggregate)
        # and what an RL run checks against its policy (the tokenizer)
        return {"reward_model": dict(dataclasses.asdict(self.cfg),
                                     tokenizer_fingerprint=self.tokenizer_fingerprint)}


def train_reward_model(train: TrainConfig, model_cfg: ModelConfig, cfg: RMConfig, *,
                       tokenizer=None) -> dict:
    """Train an outcome or process RM; returns the last logged metrics and
    the held-out evaluation (``valid ...`` keys) when valid data is given."""
    stage = RewardModelStage(train, model_cfg, cfg, tokenizer=tokenizer)
    trainer = Trainer(stage.train_cfg, model_cfg, model_builder=stage.build_model)
    metrics = trainer.fit(stage)
    trainer.close()
    return metrics


def main(argv=None) -> int:
    return stage_main(lambda: train_reward_model(*parse_args(argv, extra=RMConfig)), RewardDataError)
