"""The training loop, on megatron-core (not megatron.training).

``Trainer`` owns the pieces every stage shares — model chunks wrapped in
megatron-core DDP, the megatron optimizer, the LR schedule, the
``get_forward_backward_func`` schedule and checkpoints.  Pretraining plugs in
GPT batches and the LM loss; SFT, reward models and GRPO plug in their own
batches and loss functions through ``train_step``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from typing import Callable, Iterable

import torch

from megatron_dsm import checkpoint, platform
from megatron_dsm.config import ConfigError
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config, unwrap
from megatron_dsm.training.arguments import TrainConfig
from megatron_dsm.training.lr_schedule import LRScheduler
from megatron_dsm.training.logging import MetricsWriter


def lm_loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Token-mean LM loss of one micro-batch (GPTModel returns per-token loss)."""
    losses = output_tensor.float().view(-1)
    mask = loss_mask.float().view(-1)
    total = mask.sum()
    loss = torch.sum(losses * mask) / total.clamp(min=1.0)
    # clone: the schedule divides the returned loss in place by num_microbatches
    return loss, {"lm loss": loss.detach().clone()}


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


def check_precision_and_spec(train: TrainConfig) -> None:
    """``--bf16`` and ``--use-te`` asked for on a host that cannot run them:
    one line now instead of a megatron-core traceback after set-up."""
    if train.bf16 and not platform.cuda_available():
        # megatron-core's Float16OptimizerWithFloat16Params type-checks for CUDA tensors
        raise ConfigError("--bf16 needs a CUDA GPU: megatron-core's mixed-precision optimizer "
                          "takes only CUDA tensors; on CPU training runs in fp32 (drop --bf16)")
    if train.use_te:
        from megatron_dsm.models.gpt import transformer_engine_available

        if not transformer_engine_available():
            raise ConfigError("--use-te: transformer_engine does not import here (it needs CUDA and "
                              "the gpu extras); drop --use-te for the local spec")


@dataclasses.dataclass
class StepResult:
    metrics: dict
    grad_norm: float | None
    skipped: bool


class Trainer:
    """Model + optimizer + schedule + checkpoints for one run."""

    def __init__(self, train: TrainConfig, model_cfg: ModelConfig, *,
                 model_builder: Callable | None = None, trainable: bool = True):
        self.train_cfg, self.model_cfg = train, model_cfg
        from megatron.core import parallel_state as ps

        world = int(os.environ.get("WORLD_SIZE", "1"))
        tp, pp = train.tensor_model_parallel_size, train.pipeline_model_parallel_size
        # Every layout error is one line before any process group exists.
        self.dp = train.data_parallel_size(world)
        model_cfg.check_parallel(tp, pp)
        self.num_microbatches = train.num_microbatches(self.dp)
        if train.load:
            checkpoint.find_checkpoint(train.load)
        check_precision_and_spec(train)

        self.dist = platform.initialize_distributed(tp, pp, seed=train.seed)
        self.ps = ps
        self.bf16 = train.bf16 if train.bf16 is not None else platform.cuda_available()
        self.tconfig = transformer_config(model_cfg, tp=tp, pp=pp, bf16=self.bf16,
                                          sequence_parallel=train.sequence_parallel)
        builder = model_builder or (lambda cfg, tc: build_model(cfg, tc, use_te=train.use_te))
        model = builder(model_cfg, self.tconfig)
        if train.layout_independent_init:
            layout_independent_init(model, train.seed, model_cfg.init_method_std, model_cfg.num_layers)
        self.model = self._wrap_ddp(model) if trainable else model
        self.optimizer = self._build_optimizer() if trainable else None
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

    # -- construction -----------------------------------------------------
    def _wrap_ddp(self, model):
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.distributed.finalize_model_grads import finalize_model_grads

        ddp_cfg = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False,
            use_distributed_optimizer=False, check_for_nan_in_grad=False,
            average_in_collective=False)
        ddp = DistributedDataParallel(config=self.tconfig, ddp_config=ddp_cfg, module=model)
        self.tconfig.finalize_model_grads_func = finalize_model_grads
        return ddp

    def _build_optimizer(self):
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        t = self.train_cfg
        ocfg = OptimizerConfig(
            optimizer="adam", lr=t.lr, min_lr=t.min_lr, weight_decay=t.weight_decay,
            adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_eps=t.adam_eps,
            clip_grad=t.clip_grad, bf16=self.bf16, params_dtype=self.tconfig.params_dtype,
            use_distributed_optimizer=False)
        opt = get_megatron_optimizer(ocfg, [self.model])
        if t.cpu_fused_adam:
            use_fused_cpu_adam(opt)
        return opt

    # -- checkpoints ------------------------------------------------------
    def common_state(self) -> dict:
        return {"iteration": self.iteration, "consumed_samples": self.consumed_samples,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "train_config": dataclasses.asdict(self.train_cfg),
                "model_config": dataclasses.asdict(self.model_cfg)}

    def save(self, extra: dict | None = None, write_files: Callable | None = None):
        """``write_files(dir)``: extra files that must be part of the checkpoint
        before it is published (see ``checkpoint.save_checkpoint``)."""
        t0 = time.perf_counter()
        path = checkpoint.save_checkpoint(
            self.train_cfg.save, self.iteration, unwrap(self.model), self.optimizer,
            {**self.common_state(), **(extra or {})}, platform.rng_state(),
            write_files=write_files)
        self.writer.text(f"saved checkpoint {path} in {time.perf_counter() - t0:.2f}s")
        return path

    def load(self) -> dict:
        t = self.train_cfg
        common = checkpoint.load_checkpoint(t.load, unwrap(self.model), self.optimizer, finetune=t.finetune)
        if not t.finetune:
            self.iteration = int(common["iteration"])
            self.consumed_samples = int(common.get("consumed_samples", 0))
            if self.scheduler is not None and common.get("scheduler"):
                self.scheduler.load_state_dict(common["scheduler"])
            if "rng" in common:
                platform.set_rng_state(common["rng"])
        self.writer.text(f"loaded checkpoint {common.get('loaded_from')} "
                         f"(iteration {self.iteration}{', finetune' if t.finetune else ''})")
        return common

    # -- steps ------------------------------------------------------------
    def forward_backward(self, forward_step: Callable, microbatches: Iterable, *,
                         forward_only: bool = False, seq_length: int | None = None,
                         micro_batch_size: int | None = None, num_microbatches: int | None = None):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        fwd_bwd = get_forward_backward_func()
        return fwd_bwd(
            forward_step_func=forward_step,
            data_iterator=iter(microbatches),
            model=[self.model],
            num_microbatches=num_microbatches or self.num_microbatches,
            seq_length=seq_length or self.model_cfg.seq_length,
            micro_batch_size=micro_batch_size or self.train_cfg.micro_batch_size,
            decoder_seq_length=seq_length or self.model_cfg.seq_length,
            forward_only=forward_only)

    def train_step(self, forward_step: Callable, microbatches: Iterable, **kw) -> StepResult:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self.forward_backward(forward_step, microbatches, **kw)
        ok, grad_norm, _ = self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.iteration += 1
        return StepResult(self.reduce_metrics(losses), grad_norm, not ok)

    def reduce_metrics(self, losses: list[dict]) -> dict:
        """Mean of each metric over micro-batches and data-parallel ranks,
        taken from the last pipeline stage and shared with every rank.

        The key set is agreed once (``broadcast_object_list`` from the last
        stage) and cached on every rank; later calls take one float64
        all-reduce whose last slot flags a changed key set (any rank holding
        losses whose keys differ from the cache), and only then fall back to
        agreeing on the keys again.  One process: no collective at all."""
        is_last = self.ps.is_pipeline_last_stage() and self.ps.get_tensor_model_parallel_rank() == 0
        mine = sorted(losses[0].keys()) if (is_last and losses) else []
        if torch.distributed.get_world_size() == 1:
            return {k: sum(float(x[k]) for x in losses) / len(losses) for k in mine}
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
        """[per-key micro-batch means..., contributor count, changed-keys flag]."""
        if contribute:
            vals = [sum(float(x[k]) for x in losses) / len(losses) for k in keys] + [1.0]
        else:
            vals = [0.0] * (len(keys) + 1)
        return vals + [1.0 if flag else 0.0]

    @staticmethod
    def _metric_means(keys: list[str], vec: list[float]) -> dict:
        n = max(vec[-1], 1.0)
        return {k: v / n for k, v in zip(keys, vec[:-1])}

    def _last_stage_rank0(self) -> int:
        """Lowest global rank on the last pipeline stage with TP rank 0 (it
        holds the losses); computed once."""
        if self._metrics_src is None:
            mine = self.rank if (self.ps.is_pipeline_last_stage()
                                 and self.ps.get_tensor_model_parallel_rank() == 0) else 1 << 30
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

    def should_save(self) -> bool:
        t = self.train_cfg
        return bool(t.save and t.save_interval and self.iteration % t.save_interval == 0)

    def close(self):
        self.writer.close()


def use_fused_cpu_adam(optimizer) -> int:
    """Switch megatron-core's torch AdamW fallback to torch's fused CPU kernel.

    Without transformer-engine or apex, ``get_megatron_optimizer`` builds
    ``torch.optim.AdamW`` with default settings, which on CPU tensors is the
    per-parameter loop (about ten dispatches per tensor); the fused kernel
    does the same update in one pass (1.78 -> 0.44 ms per step for the
    1.2M-parameter GRPO benchmark model on 2 cores).  Opt-in
    (``--cpu-fused-adam``): the results differ from the loop by rounding, and
    long runs drift apart from there.  Only groups whose parameters are all
    fp32/bf16 CPU tensors are switched; returns how many."""
    inner = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    n = 0
    for o in inner:
        torch_opt = getattr(o, "optimizer", None)
        if not isinstance(torch_opt, (torch.optim.AdamW, torch.optim.Adam)):
            continue
        for group in torch_opt.param_groups:
            if group.get("fused") or group.get("differentiable") or not group["params"]:
                continue
            if all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.bfloat16)
                   for p in group["params"]):
                group["fused"], group["foreach"] = True, False
                n += 1
    return n


# ---------------------------------------------------------------------------
# pretraining
# ---------------------------------------------------------------------------


def _cache_dir(train: TrainConfig) -> str:
    if train.data_cache_path:
        return train.data_cache_path
    if train.save:
        return os.path.join(train.save, "data_cache")
    return os.path.join(tempfile.gettempdir(), "megatron_dsm_data_cache")


def resolve_blend(train: TrainConfig):
    from megatron_dsm.training.data import blend_from_mixture, parse_data_path

    if train.mixture:
        return blend_from_mixture(train.mixture)
    if not train.data_path:
        raise ConfigError("no training data: give --data-path or --mixture")
    return parse_data_path(train.data_path)


def pretrain(train: TrainConfig, model_cfg: ModelConfig, *, eod: int | None = None) -> dict:
    """Run continued pretraining; returns the last logged metrics."""
    from megatron_dsm.training.data import (BatchOrder, build_datasets, tokenizer_facts,
                                            validate_blend)

    blend = resolve_blend(train)
    facts = tokenizer_facts(blend.prefixes[0]) if blend.prefixes else {}
    if model_cfg.vocab_size is None:
        if "vocab_size" not in facts:
            raise ConfigError(f"model vocab size unknown: {blend.prefixes[0]}.json records no "
                              f"tokenizer; pass --vocab-size")
        model_cfg.vocab_size = int(facts["vocab_size"])
    # Validate data before any process group or model exists.
    stats = validate_blend(blend, model_cfg.vocab_size, check_token_ids=train.check_token_ids,
                           fingerprint=train.tokenizer_fingerprint)
    trainer = Trainer(train, model_cfg)
    ps = trainer.ps
    if train.load:
        trainer.load()
    gbs = train.global_batch_size
    eval_runs = (train.train_iters // train.eval_interval + 1) if train.eval_interval else 0
    num_samples = [train.train_iters * gbs, max(eval_runs * train.eval_iters * gbs, 1), 1]
    if eod is None:
        eod = int(facts.get("eod", 0))
    train_ds, valid_ds, _ = build_datasets(
        blend, seq_length=model_cfg.seq_length, seed=train.seed, split=train.split,
        num_samples=num_samples, cache_dir=_cache_dir(train), vocab_size=model_cfg.vocab_size,
        eod=eod)
    dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
    order = BatchOrder(train_ds, global_batch=gbs, micro_batch=train.micro_batch_size,
                       dp_rank=dp_rank, dp_size=dp_size, consumed_samples=trainer.consumed_samples)
    trainer.writer.text(
        f"> training {train.model} ({model_cfg.num_parameters():,} params) TP={train.tensor_model_parallel_size} "
        f"PP={train.pipeline_model_parallel_size} DP={dp_size} on {platform.device_name()}; "
        f"data: {sum(s['tokens'] for s in stats.values()):,} tokens in {len(stats)} prefix(es)")
    last = {}
    tokens_per_step = gbs * model_cfg.seq_length
    window_t0, window_n = time.perf_counter(), 0
    while trainer.iteration < train.train_iters:
        lr = trainer.current_lr()
        result = trainer.train_step(gpt_forward_step, list(order.microbatches()))
        trainer.consumed_samples = order.consumed_samples
        window_n += 1
        it = trainer.iteration
        if it % train.log_interval == 0 or it == train.train_iters:
            elapsed = (time.perf_counter() - window_t0) / window_n
            fields = trainer.step_fields(result, lr, elapsed, tokens_per_step)
            trainer.writer.log(it, train.train_iters, fields)
            last = dict(fields, iteration=it)
            window_t0, window_n = time.perf_counter(), 0
        if train.eval_interval and valid_ds is not None and it % train.eval_interval == 0:
            v = evaluate(trainer, valid_ds)
            trainer.writer.text(f" validation loss at iteration {it} | lm loss: {v['lm loss']:.6E} |")
            last["validation lm loss"] = v["lm loss"]
        if trainer.should_save():
            trainer.save()
            window_t0 = time.perf_counter()  # the save is not part of step time
        if train.exit_interval and it % train.exit_interval == 0:
            trainer.writer.text(f"exiting at iteration {it} (--exit-interval)")
            break
    # Always leave a checkpoint of the final state (unless it was just saved).
    if train.save and trainer.iteration > 0 and not trainer.should_save():
        trainer.save()
    trainer.close()
    return last


def evaluate(trainer: Trainer, valid_ds) -> dict:
    from megatron_dsm.training.data import BatchOrder

    t = trainer.train_cfg
    ps = trainer.ps
    order = BatchOrder(valid_ds, global_batch=t.global_batch_size, micro_batch=t.micro_batch_size,
                       dp_rank=ps.get_data_parallel_rank(), dp_size=ps.get_data_parallel_world_size())
    trainer.model.eval()
    totals: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(t.eval_iters):
            losses = trainer.forward_backward(gpt_forward_step, list(order.microbatches()),
                                              forward_only=True)
            m = trainer.reduce_metrics(losses)
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v / t.eval_iters
    trainer.model.train()
    return totals


def stage_main(body: Callable[[], object], *errors: type[Exception]) -> int:
    """Entry-point wrapper shared by the training stages (pretrain, SFT,
    reward models, RL): bad input is one ``error:`` line and exit code 2 —
    config, checkpoint and tokenizer errors plus the stage's own ``errors`` —
    and the process groups are always torn down."""
    import sys

    from megatron_dsm.data.tokenizer import TokenizerError

    try:
        rc = body()
    except (ConfigError, checkpoint.CheckpointError, TokenizerError, *errors) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        platform.destroy_distributed()
    return rc if isinstance(rc, int) else 0


def main(argv=None) -> int:
    from megatron_dsm.training.arguments import parse_args

    return stage_main(lambda: pretrain(*parse_args(argv)))
