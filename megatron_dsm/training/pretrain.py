"""Continued pretraining as a stage of ``Trainer.fit``.

Data: a Megatron blend (``--data-path`` or ``--mixture``) through
megatron-core's BlendedMegatronDatasetBuilder and GPTDataset, checked before
any process group exists (training/data.py); step ``t`` reads samples
``[t*G, (t+1)*G)`` (``BatchOrder``), so a resume needs only the consumed
sample count.  Loss: GPTModel's per-token cross entropy, averaged over the
target tokens of the global batch.  Evaluation: ``--eval-iters`` global batches of the
validation split.
"""

from __future__ import annotations

import functools
import os
import tempfile

import torch

from megatron_dsm import platform
from megatron_dsm.config import ConfigError
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.training.arguments import TrainConfig, parse_args
from megatron_dsm.training.data import (BatchOrder, blend_from_mixture, build_datasets,
                                        parse_data_path, tokenizer_facts, validate_blend)
from megatron_dsm.training.loop import Trainer
from megatron_dsm.training.stage import BatchStage, loss_count, mean_metric, stage_main


def lm_loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """LM loss of one micro-batch (GPTModel returns per-token loss) as
    ``(sum over its target tokens, their count, metrics)``: the loop divides
    by the tokens of the whole global batch, so every target token weighs
    the same however the batch is split into micro-batches and ranks."""
    losses = output_tensor.float().view(-1)
    mask = loss_mask.float().view(-1)
    total = torch.sum(losses * mask)
    count = loss_count(mask.sum())
    return total, count, {"lm loss": mean_metric(total, count)}


def gpt_forward_step(data_iterator, model):
    """forward_step_func for megatron-core's schedules: one GPT micro-batch."""
    batch = next(data_iterator)
    dev = platform.device()
    tokens = batch["tokens"].to(dev, non_blocking=True)
    position_ids = batch["position_ids"].to(dev, non_blocking=True)
    labels = batch["labels"].to(dev, non_blocking=True)
    loss_mask = batch["loss_mask"].to(dev, non_blocking=True)
    attention_mask = batch.get("attention_mask")
    if attention_mask is not None:
        attention_mask = attention_mask.to(dev)
    output = model(tokens, position_ids, attention_mask, labels=labels)
    return output, functools.partial(lm_loss_func, loss_mask)


def _cache_dir(train: TrainConfig) -> str:
    if train.data_cache_path:
        return train.data_cache_path
    if train.save:
        return os.path.join(train.save, "data_cache")
    return os.path.join(tempfile.gettempdir(), "megatron_dsm_data_cache")


def resolve_blend(train: TrainConfig):
    if train.mixture:
        return blend_from_mixture(train.mixture)
    if not train.data_path:
        raise ConfigError("no training data: give --data-path or --mixture")
    return parse_data_path(train.data_path)


class PretrainStage(BatchStage):
    """LM training on a Megatron blend."""

    forward_step = staticmethod(gpt_forward_step)

    def __init__(self, train: TrainConfig, model_cfg: ModelConfig, *, eod: int | None = None):
        """Checks the data (and fills in the vocab size it records) before
        any process group or model exists."""
        self.train, self.model_cfg = train, model_cfg
        self.blend = resolve_blend(train)
        facts = tokenizer_facts(self.blend.prefixes[0]) if self.blend.prefixes else {}
        if model_cfg.vocab_size is None:
            if "vocab_size" not in facts:
                raise ConfigError(f"model vocab size unknown: {self.blend.prefixes[0]}.json records no "
                                  f"tokenizer; pass --vocab-size")
            model_cfg.vocab_size = int(facts["vocab_size"])
        self.stats = validate_blend(self.blend, model_cfg.vocab_size, check_token_ids=train.check_token_ids,
                                    fingerprint=train.tokenizer_fingerprint)
        self.eod = int(facts.get("eod", 0)) if eod is None else eod
        self.train_ds = self.valid_ds = self.order = None

    def setup(self, trainer) -> None:
        t = self.train
        eval_runs = (t.train_iters // t.eval_interval + 1) if t.eval_interval else 0
        num_samples = [t.train_iters * t.global_batch_size,
                       max(eval_runs * t.eval_iters * t.global_batch_size, 1), 1]
        self.train_ds, self.valid_ds, _ = build_datasets(
            self.blend, seq_length=self.model_cfg.seq_length, seed=t.seed, split=t.split,
            num_samples=num_samples, cache_dir=_cache_dir(t), vocab_size=self.model_cfg.vocab_size,
            eod=self.eod)

    def start(self, trainer) -> None:
        self.order = self._order(self.train_ds, trainer, trainer.consumed_samples)

    def _order(self, dataset, trainer, consumed: int) -> BatchOrder:
        return BatchOrder(dataset, global_batch=self.train.global_batch_size,
                          micro_batch=self.train.micro_batch_size,
                          dp_rank=trainer.ps.get_data_parallel_rank(),
                          dp_size=trainer.ps.get_data_parallel_world_size(), consumed_samples=consumed)

    def banner(self, trainer) -> str:
        t = self.train
        tokens = sum(s["tokens"] for s in self.stats.values())
        return (f"> training {t.model} ({self.model_cfg.num_parameters():,} params) "
                f"TP={t.tensor_model_parallel_size} PP={t.pipeline_model_parallel_size} "
                f"DP={trainer.ps.get_data_parallel_world_size()} on {platform.device_name()}; "
                f"data: {tokens:,} tokens in {len(self.stats)} prefix(es)")

    def microbatches(self, trainer) -> list:
        return list(self.order.microbatches())

    def tokens_per_step(self, trainer) -> int:
        return self.train.global_batch_size * self.model_cfg.seq_length

    def eval_interval(self, trainer) -> int | None:
        return self.train.eval_interval if self.train.eval_interval and self.valid_ds is not None else None

    def evaluate(self, trainer) -> dict:
        """Mean LM loss over ``--eval-iters`` global batches from the start
        of the validation split (the same batches every time)."""
        t = self.train
        order = self._order(self.valid_ds, trainer, 0)
        trainer.model.eval()
        totals: dict[str, float] = {}
        with torch.no_grad():
            for _ in range(t.eval_iters):
                losses = trainer.forward_backward(gpt_forward_step, list(order.microbatches()),
                                                  forward_only=True)
                for k, v in trainer.reduce_metrics(losses).items():
                    totals[k] = totals.get(k, 0.0) + v / t.eval_iters
        trainer.model.train()
        return totals


def pretrain(train: TrainConfig, model_cfg: ModelConfig, *, eod: int | None = None) -> dict:
    """Run continued pretraining; returns the last logged metrics."""
    stage = PretrainStage(train, model_cfg, eod=eod)
    trainer = Trainer(train, model_cfg)
    last = trainer.fit(stage)
    trainer.close()
    return last


def main(argv=None) -> int:
    return stage_main(lambda: pretrain(*parse_args(argv)))
