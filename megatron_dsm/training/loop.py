"""The one training loop: ``Trainer`` and ``Trainer.fit(stage)``, on megatron-core.

``Trainer`` owns what every stage shares: the model wrapped in megatron-core
DDP, the megatron optimizer, the LR schedule, the
``get_forward_backward_func`` schedule, metric reduction, the log writer and
a ``CheckpointManager``.  ``fit(stage)`` is the step loop of pretraining,
SFT, reward models and RL alike (stages: training/stage.py): steps, the
Megatron log lines (DESIGN.md), evaluation before the first step, every
``eval_interval`` and at the last step, checkpoints every
``--save-interval`` and at the end, ``--exit-interval``, and SIGTERM /
SIGUSR1 (finish the step, save, return: training/signals.py).

A stage that trains a second model inside its own step (PPO's critic, a
reward model refreshed between RL iterations) gives it a ``Trainer`` of its
own, and may ``fit`` it again with a larger ``train_iters``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Iterable

import torch
from megatron.core import parallel_state as ps
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_dsm import checkpoint, platform
from megatron_dsm.config import ConfigError
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import (build_model, layout_independent_init, transformer_config,
                                     transformer_engine_available)
from megatron_dsm.training.arguments import TrainConfig
from megatron_dsm.training.checkpointer import CheckpointManager
from megatron_dsm.training.logging import MetricsWriter, format_fields
from megatron_dsm.training.lr_schedule import LRScheduler
from megatron_dsm.training.optimizer import build_optimizer, wrap_ddp
from megatron_dsm.training.signals import EXIT
from megatron_dsm.training.stage import Stage, StepResult


def check_precision_and_spec(train: TrainConfig) -> None:
    """``--bf16`` and ``--use-te`` asked for on a host that cannot run them:
    one line now instead of a megatron-core traceback after set-up."""
    if train.bf16 and not platform.cuda_available():
        # megatron-core's Float16OptimizerWithFloat16Params type-checks for CUDA tensors
        raise ConfigError("--bf16 needs a CUDA GPU: megatron-core's mixed-precision optimizer "
                          "takes only CUDA tensors; on CPU training runs in fp32 (drop --bf16)")
    if train.use_te and not transformer_engine_available():
        raise ConfigError("--use-te: transformer_engine does not import here (it needs CUDA and "
                          "the gpu extras); drop --use-te for the local spec")


class Trainer:
    """Model + optimizer + schedule + checkpoints for one run, and its loop."""

    def __init__(self, train: TrainConfig, model_cfg: ModelConfig, *,
                 model_builder: Callable | None = None, trainable: bool = True):
        self.train_cfg, self.model_cfg = train, model_cfg
        world = int(os.environ.get("WORLD_SIZE", "1"))
        tp, pp = train.tensor_model_parallel_size, train.pipeline_model_parallel_size
        # Every layout error is one line before any process group exists.
        self.dp = train.data_parallel_size(world)
        model_cfg.check_parallel(tp, pp)
        train.check_layers(model_cfg.num_layers)
        self.num_microbatches = train.num_microbatches(self.dp)
        if train.load:
            checkpoint.find_checkpoint(train.load)
        check_precision_and_spec(train)

        self.dist = platform.initialize_distributed(tp, pp, seed=train.seed)
        self.ps = ps
        self.bf16 = train.bf16 if train.bf16 is not None else platform.cuda_available()
        # Losses are (sum, count) per micro-batch and the gradient is divided by the
        # count over all micro-batches and DP ranks (finalize_model_grads): the
        # update of one big batch, however it is split.
        self.tconfig = transformer_config(model_cfg, tp=tp, pp=pp, bf16=self.bf16,
                                          sequence_parallel=train.sequence_parallel,
                                          calculate_per_token_loss=True,
                                          **train.recompute_kwargs())
        builder = model_builder or (lambda cfg, tc: build_model(cfg, tc, use_te=train.use_te))
        model = builder(model_cfg, self.tconfig)
        if train.layout_independent_init:
            layout_independent_init(model, train.seed, model_cfg.init_method_std, model_cfg.num_layers)
        self.model = (wrap_ddp(model, self.tconfig, distributed_optimizer=train.use_distributed_optimizer)
                      if trainable else model)
        self.optimizer = build_optimizer(self.model, train, self.tconfig, bf16=self.bf16) if trainable else None
        self.scheduler = None
        if self.optimizer is not None:
            self.scheduler = LRScheduler(
                self.optimizer, peak=train.lr, style=train.lr_decay_style,
                warmup=train.lr_warmup_iters, total=train.lr_decay_iters or train.train_iters,
                min_lr=train.min_lr, milestones=train.lr_multistep_milestones,
                factors=train.lr_multistep_factors)
        self.iteration = 0
        self.consumed_samples = 0
        self.rank = torch.distributed.get_rank()
        self._metrics_src: int | None = None
        self._metric_keys: list[str] | None = None
        self.writer = MetricsWriter(
            enabled=self.rank == 0, tensorboard_dir=train.tensorboard_dir,
            wandb_project=train.wandb_project, json_path=train.log_json,
            run_config=dataclasses.asdict(train))
        self.checkpointer = CheckpointManager(train, self.writer)
        self.stage: Stage | None = None

    # -- state --------------------------------------------------------------
    def state_dict(self) -> dict:
        """The trainer's part of a checkpoint's common state."""
        return {"iteration": self.iteration, "consumed_samples": self.consumed_samples,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "train_config": dataclasses.asdict(self.train_cfg),
                "model_config": dataclasses.asdict(self.model_cfg)}

    def load_state_dict(self, common: dict) -> None:
        self.iteration = int(common["iteration"])
        self.consumed_samples = int(common.get("consumed_samples", 0))
        if self.scheduler is not None and common.get("scheduler"):
            self.scheduler.load_state_dict(common["scheduler"])

    # -- the loop -------------------------------------------------------------
    def attach(self, stage: Stage) -> dict:
        """Set ``stage`` up on this trainer and restore ``--load`` into both
        (once per stage; ``fit`` calls it).  Returns the loaded checkpoint's
        common state, {} when nothing was loaded."""
        if self.stage is stage:
            return {}
        self.stage = stage
        stage.setup(self)
        common = self.checkpointer.load(self, stage) if self.checkpointer.load_from else {}
        stage.start(self)
        line = stage.banner(self)
        if line:
            self.writer.text(line)
        return common

    def fit(self, stage: Stage, *, train_iters: int | None = None,
            on_step: Callable[[int, dict], None] | None = None) -> dict:
        """Run ``stage`` until iteration ``train_iters`` (default
        ``--train-iters``), an exit (``--exit-interval``, a signal) or the
        stage's own stop; ``on_step(iteration, fields)`` sees every step's
        log fields.  Returns the last logged fields and the evaluations
        (``initial `` and ``stage.eval_prefix`` before their keys)."""
        total = train_iters or self.train_cfg.train_iters
        self.attach(stage)
        interval = stage.eval_interval(self)
        last: dict = {}
        if interval is not None:
            last.update({f"initial {k}": v for k, v in self._evaluate(stage).items()})
        with EXIT:
            timer = _StepTimer()
            while self.iteration < total and not stage.finished(self):
                fields = self._step(stage, timer)
                it = self.iteration
                evaluate = interval is not None and (it == total or (bool(interval) and it % interval == 0))
                if evaluate and stage.eval_in_log_line:
                    fields.update(self._evaluate(stage, line=False))
                if it % self.train_cfg.log_interval == 0 or it == total or (evaluate and stage.eval_in_log_line):
                    self.writer.log(it, total, fields)
                    last.update(fields, iteration=it)
                    timer.reset()
                if on_step is not None:
                    on_step(it, fields)
                if evaluate and not stage.eval_in_log_line:
                    last.update(self._evaluate(stage))
                if self.checkpointer.due(it):
                    self.checkpointer.save(self, stage)
                reason = self._exit_reason(it)
                if reason:
                    self.writer.text(f"exiting at iteration {it} ({reason})")
                    break
            if self.checkpointer.final_due(self.iteration):
                self.checkpointer.save(self, stage)
        return last

    def _step(self, stage: Stage, timer: "_StepTimer") -> dict:
        lr = self.current_lr()
        t0 = time.perf_counter()
        result = stage.step(self)
        self.consumed_samples += stage.samples_per_step(self)
        elapsed = timer.add(time.perf_counter() - t0)
        return self.step_fields(result, lr, elapsed, stage.tokens_per_step(self))

    def _evaluate(self, stage: Stage, *, line: bool = True) -> dict:
        """The stage's evaluation, its keys behind ``stage.eval_prefix``;
        printed as a line of its own unless it joins the step's log line."""
        metrics = stage.evaluate(self)
        if line:
            self.writer.text(f" {stage.eval_title} at iteration {self.iteration} |{format_fields(metrics)}")
        return {f"{stage.eval_prefix}{k}": v for k, v in metrics.items()}

    def _exit_reason(self, iteration: int) -> str | None:
        """Why the loop stops after this step, if it does (every rank agrees)."""
        signal_name = EXIT.agreed()
        if signal_name:
            return signal_name
        t = self.train_cfg
        if t.exit_interval and iteration % t.exit_interval == 0:
            return "--exit-interval"
        return None

    # -- steps ------------------------------------------------------------
    def forward_backward(self, forward_step: Callable, microbatches: Iterable, *,
                         forward_only: bool = False, seq_length: int | None = None,
                         micro_batch_size: int | None = None, num_microbatches: int | None = None):
        fwd_bwd = get_forward_backward_func()
        return fwd_bwd(
            forward_step_func=_counted(forward_step),
            data_iterator=iter(microbatches),
            model=[self.model],
            num_microbatches=num_microbatches or self.num_microbatches,
            seq_length=seq_length or self.model_cfg.seq_length,
            micro_batch_size=micro_batch_size or self.train_cfg.micro_batch_size,
            decoder_seq_length=seq_length or self.model_cfg.seq_length,
            forward_only=forward_only)

    def train_step(self, forward_step: Callable, microbatches: Iterable, **kw) -> StepResult:
        """One optimizer step over ``microbatches`` (``forward_backward``'s
        keywords pass through); advances the iteration and the LR schedule."""
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self.forward_backward(forward_step, microbatches, **kw)
        ok, grad_norm, _ = self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.iteration += 1
        return StepResult(self.reduce_metrics(losses), grad_norm, not ok)

    def reduce_metrics(self, losses: list[dict]) -> dict:
        """Each metric over micro-batches and data-parallel ranks, taken from
        the last pipeline stage and shared with every rank.  A ``[total,
        count]`` pair (``stage.mean_metric``) gives sum(totals) / sum(counts),
        the mean over the whole batch; a plain value is averaged over the
        micro-batches of a rank, then over ranks.

        The key set is agreed once (``broadcast_object_list`` from the last
        stage) and cached on every rank; later calls take one float64
        all-reduce whose last slot flags a changed key set (any rank holding
        losses whose keys differ from the cache), and only then fall back to
        agreeing on the keys again.  One process: no collective at all."""
        is_last = ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
        mine = sorted(losses[0].keys()) if (is_last and losses) else []
        if torch.distributed.get_world_size() == 1:
            return self._metric_means(mine, self._metric_vector(mine, losses, bool(losses))[:-1])
        keys = self._metric_keys
        if keys is not None:
            vec = platform.all_reduce_values(self._metric_vector(
                keys, losses, is_last and bool(losses) and mine == keys, flag=is_last and mine != keys))
            if vec[-1] == 0.0:
                return self._metric_means(keys, vec[:-1])
        # Agree on the key set: the last stage of pipeline rank holding rank 0's group.
        obj = [mine]
        torch.distributed.broadcast_object_list(obj, src=self._last_stage_rank0())
        keys = self._metric_keys = obj[0]
        vec = platform.all_reduce_values(self._metric_vector(keys, losses, is_last and bool(losses))[:-1])
        return self._metric_means(keys, vec)

    @staticmethod
    def _metric_vector(keys: list[str], losses: list[dict], contribute: bool,
                       flag: bool = False) -> list[float]:
        """[numerator, denominator per key..., changed-keys flag]: a pair adds
        its total and count per micro-batch; a plain value its micro-batch
        mean and 1 (this rank)."""
        vals: list[float] = []
        for k in keys:
            if not contribute:
                vals += [0.0, 0.0]
            elif _is_pair(losses[0][k]):
                pairs = torch.stack([x[k] for x in losses]).double().sum(0).tolist()
                vals += pairs
            else:
                vals += [sum(float(x[k]) for x in losses) / len(losses), 1.0]
        return vals + [1.0 if flag else 0.0]

    @staticmethod
    def _metric_means(keys: list[str], vec: list[float]) -> dict:
        return {k: vec[2 * i] / vec[2 * i + 1] if vec[2 * i + 1] > 0 else 0.0
                for i, k in enumerate(keys)}

    def _last_stage_rank0(self) -> int:
        """Lowest global rank on the last pipeline stage with TP rank 0 (it
        holds the losses); computed once."""
        if self._metrics_src is None:
            mine = self.rank if (ps.is_pipeline_last_stage()
                                 and ps.get_tensor_model_parallel_rank() == 0) else 1 << 30
            self._metrics_src = int(platform.all_reduce_values(
                [mine], op=torch.distributed.ReduceOp.MIN, dtype=torch.int64)[0])
        return self._metrics_src

    def step_fields(self, result: StepResult, lr: float, elapsed_s: float,
                    tokens_per_step: int | None = None) -> dict:
        """The Megatron log-line fields of one step (every stage logs these)."""
        fields = {"consumed samples": self.consumed_samples,
                  "elapsed time per iteration (ms)": elapsed_s * 1000.0,
                  "learning rate": lr}
        fields.update(result.metrics)
        if result.grad_norm is not None:
            fields["grad norm"] = float(result.grad_norm)
        if tokens_per_step:
            fields["tokens per second"] = tokens_per_step / elapsed_s
        if result.skipped:
            fields["skipped iterations"] = 1
        return fields

    def current_lr(self) -> float:
        return self.scheduler.current_lr() if self.scheduler else 0.0

    def close(self):
        self.writer.close()


def _is_pair(value) -> bool:
    return torch.is_tensor(value) and value.numel() == 2


def _counted(forward_step: Callable) -> Callable:
    """``forward_step`` whose loss function gives megatron-core's ``(loss sum,
    count, metrics)``; one that gives ``(loss, metrics)`` states a mean of its
    micro-batch and counts 1 (megatron-core's mean over micro-batches)."""
    def step(data_iterator, model):
        output, loss_func = forward_step(data_iterator, model)
        return output, functools.partial(_with_count, loss_func)
    return step


def _with_count(loss_func: Callable, output):
    out = loss_func(output)
    if len(out) == 3:
        return out
    loss, metrics = out
    return loss, torch.ones((), dtype=torch.int, device=loss.device), metrics


class _StepTimer:
    """Mean duration of the steps since the last log line (evaluation and
    checkpoint saves between steps are not step time)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total, self.n = 0.0, 0

    def add(self, seconds: float) -> float:
        self.total += seconds
        self.n += 1
        return self.total / self.n
