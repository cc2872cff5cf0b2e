"""Training options: one dataclass, Megatron-LM's flag names derived from it.

``parse_args`` layers three sources, later wins: the dataclass defaults, a
YAML file (``--config``; sections ``model:`` and ``train:``), the command line.
"""

from __future__ import annotations

import argparse
import sys

from megatron_dsm.config import (ArgumentParser, ConfigError, add_arguments, check_sections, checked_values, field,
                                 from_namespace, load_yaml, options)
from megatron_dsm.models.config import PRESETS, ModelConfig, preset


@options
class TrainConfig:
    # model
    model: str = field("tiny", help="model preset", choices=sorted(PRESETS))
    use_te: bool | None = field(None, help="transformer-engine spec (default: when TE and CUDA are present)")
    bf16: bool | None = field(None, help="bf16 mixed precision (default: on GPU yes, on CPU no)")
    # parallelism
    tensor_model_parallel_size: int = field(1, help="tensor parallel size (TP)")
    pipeline_model_parallel_size: int = field(1, help="pipeline parallel size (PP)")
    sequence_parallel: bool = field(False, help="sequence parallelism with TP")
    use_distributed_optimizer: bool = field(
        False, help="shard the optimizer state (fp32 master weights, Adam moments) over the "
                    "data-parallel ranks: megatron-core's DistributedOptimizer (gradients are "
                    "reduce-scattered, updated shards all-gathered)")
    recompute_granularity: str | None = field(
        None, choices=("full", "selective"),
        help="activation recomputation: full (whole layers, see --recompute-method) or "
             "selective (core attention only)")
    recompute_method: str | None = field(
        None, choices=("uniform", "block"),
        help="full recompute: uniform (every layer, in groups of --recompute-num-layers) or "
             "block (the first --recompute-num-layers layers of each pipeline stage)")
    recompute_num_layers: int | None = field(None, min=1, help="full recompute: layers per group "
                                                                "(uniform) or per stage (block)")
    # batches
    micro_batch_size: int = field(4, help="sequences per micro-batch per data-parallel rank")
    global_batch_size: int = field(16, help="sequences per optimizer step (all ranks)")
    train_iters: int = field(100, help="optimizer steps")
    # optimizer
    lr: float = field(3e-3, help="peak learning rate")
    min_lr: float = field(0.0, help="floor for cosine decay")
    lr_decay_style: str = field("multistep", help="LR schedule", choices=("multistep", "cosine", "constant", "linear"))
    lr_warmup_iters: int = field(0, help="linear warmup steps")
    lr_decay_iters: int | None = field(None, help="decay horizon (default: train_iters)")
    lr_multistep_milestones: tuple[float, ...] = field((0.8, 0.9), help="fractions of training where the multistep schedule drops")
    lr_multistep_factors: tuple[float, ...] = field((0.316, 0.1), help="fraction of peak LR after each milestone")
    weight_decay: float = field(0.1, help="AdamW weight decay")
    adam_beta1: float = field(0.9, help="AdamW beta1")
    adam_beta2: float = field(0.95, help="AdamW beta2")
    adam_eps: float = field(1e-8, help="AdamW epsilon")
    cpu_fused_adam: bool = field(False, help="CPU without TE/apex: torch's fused AdamW kernel instead of "
                                 "its per-parameter loop (same update up to rounding; what TRL's "
                                 "adamw_torch_fused runs)")
    clip_grad: float = field(1.0, help="gradient clipping by global norm (0: off)")
    seed: int = field(1234, help="random seed")
    layout_independent_init: bool = field(True, help="initial weights independent of TP/PP layout")
    # data
    data_path: list[str] | None = field(None, help='blend: "w1 prefix1 w2 prefix2 ..." or one prefix')
    mixture: str | None = field(None, help="mixture YAML (sources, weights) instead of --data-path")
    split: str = field("98,2,0", help="train/valid/test split of each dataset")
    data_cache_path: str | None = field(None, help="where GPTDataset caches its indices (default: SAVE/data_cache or a temp dir)")
    tokenizer_fingerprint: str | None = field(None, help="expected tokenizer fingerprint of the data")
    check_token_ids: bool = field(True, help="scan the data for ids >= vocab size before training")
    # checkpoints
    save: str | None = field(None, help="checkpoint directory")
    load: str | None = field(None, help="checkpoint to resume from")
    save_interval: int | None = field(None, help="save every N iterations")
    finetune: bool = field(False, help="--load weights only; reset iteration, optimizer, scheduler")
    exit_interval: int | None = field(None, help="stop after this iteration (for tests)")
    # logging / eval
    log_interval: int = field(10, help="iterations between log lines")
    eval_interval: int | None = field(None, help="iterations between validation runs")
    eval_iters: int = field(2, help="validation batches per evaluation")
    tensorboard_dir: str | None = field(None, help="TensorBoard log dir")
    wandb_project: str | None = field(None, help="Weights & Biases project (optional)")
    log_json: str | None = field(None, help="also write each log line as JSON to this file")

    def __post_init__(self):
        if self.micro_batch_size <= 0 or self.global_batch_size <= 0:
            raise ConfigError("micro and global batch sizes must be > 0")
        if self.train_iters <= 0:
            raise ConfigError(f"--train-iters must be > 0, got {self.train_iters}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if len(self.lr_multistep_milestones) != len(self.lr_multistep_factors):
            raise ConfigError("--lr-multistep-milestones and --lr-multistep-factors differ in length")
        if self.data_path and self.mixture:
            raise ConfigError("give --data-path or --mixture, not both")
        if self.save_interval is not None and self.save_interval <= 0:
            raise ConfigError("--save-interval must be > 0")
        if self.log_interval <= 0:
            raise ConfigError("--log-interval must be > 0")
        self._check_recompute()

    def _check_recompute(self) -> None:
        """megatron-core's TransformerConfig rules for the recompute options,
        as one line before anything is built."""
        g, method, n = self.recompute_granularity, self.recompute_method, self.recompute_num_layers
        if g is None and (method is not None or n is not None):
            raise ConfigError("--recompute-method and --recompute-num-layers need "
                              "--recompute-granularity full")
        if g == "full" and (method is None or n is None):
            raise ConfigError("--recompute-granularity full needs --recompute-method "
                              "(uniform or block) and --recompute-num-layers")
        if g == "selective" and (method is not None or n is not None):
            raise ConfigError("--recompute-granularity selective takes no --recompute-method "
                              "or --recompute-num-layers (it recomputes core attention only)")

    def check_layers(self, num_layers: int) -> None:
        """--recompute-num-layers against the layers of one pipeline stage."""
        per_stage = num_layers // self.pipeline_model_parallel_size
        if self.recompute_num_layers is not None and self.recompute_num_layers > per_stage:
            raise ConfigError(f"--recompute-num-layers {self.recompute_num_layers} exceeds the "
                              f"{per_stage} layers of a pipeline stage")

    def recompute_kwargs(self) -> dict:
        """The recompute options as megatron-core TransformerConfig fields."""
        if self.recompute_granularity is None:
            return {}
        return {"recompute_granularity": self.recompute_granularity,
                "recompute_method": self.recompute_method,
                "recompute_num_layers": self.recompute_num_layers}

    def data_parallel_size(self, world_size: int) -> int:
        mp = self.tensor_model_parallel_size * self.pipeline_model_parallel_size
        if world_size % mp:
            raise ConfigError(f"world size {world_size} is not divisible by TP x PP = "
                              f"{self.tensor_model_parallel_size} x "
                              f"{self.pipeline_model_parallel_size} = {mp}")
        return world_size // mp

    def num_microbatches(self, dp: int) -> int:
        per_step = self.micro_batch_size * dp
        if self.global_batch_size % per_step:
            raise ConfigError(f"--global-batch-size {self.global_batch_size} is not divisible by "
                              f"micro batch {self.micro_batch_size} x data parallel {dp}")
        return self.global_batch_size // per_step


def build_parser(extra: type | None = None) -> argparse.ArgumentParser:
    p = ArgumentParser(description="megatron-dsm training", allow_abbrev=False)
    p.add_argument("--config", default=None, help="YAML recipe (sections: model, train)")
    add_arguments(p, TrainConfig, "training")
    add_arguments(p, ModelConfig, "model overrides")
    if extra is not None:
        add_arguments(p, extra, extra.__name__)
    return p


def parse_args(argv=None, extra: type | None = None):
    """Returns (TrainConfig, ModelConfig[, extra]) from YAML + command line;
    every value is checked (``config.checked_values``) before anything runs."""
    parser = build_parser(extra)
    ns = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    train_yaml, model_yaml, extra_yaml = {}, {}, {}
    if ns["config"]:
        extra_section = getattr(extra, "yaml_section", "extra") if extra is not None else None
        check_sections(ns["config"], ["train", "model"] + ([extra_section] if extra_section else []))
        train_yaml = load_yaml(ns["config"], "train")
        model_yaml = load_yaml(ns["config"], "model")
        if extra is not None:
            extra_yaml = load_yaml(ns["config"], extra_section)
    train = from_namespace(TrainConfig, ns, train_yaml)
    model_cfg = preset(train.model, **checked_values(ModelConfig, ns, model_yaml))
    if extra is None:
        return train, model_cfg
    return train, model_cfg, from_namespace(extra, ns, extra_yaml)
