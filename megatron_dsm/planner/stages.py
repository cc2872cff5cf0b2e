"""A stage's configs, parsed as its tool parses them, and its layout rules.

``load_recipe`` runs the stage tool's own ``training.arguments.parse_args``
(YAML under the command line), so the planner sees the values the run
would.  ``check`` applies a layout and raises the first broken rule as the
``ConfigError`` the training code raises for it: the checks are the
config dataclasses' own methods, called in the order the stage calls them.
"""

from __future__ import annotations

import dataclasses

from megatron_dsm.config import ConfigError, load_yaml
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.rl.reward_models import RMConfig
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.training.arguments import TrainConfig, parse_args
from megatron_dsm.training.sft import SFTConfig

STAGES = ("pretrain", "sft", "rm", "rl")
EXTRA = {"pretrain": None, "sft": SFTConfig, "rm": RMConfig, "rl": RLConfig}
TOOLS = {"pretrain": "tools/pretrain.py", "sft": "tools/sft.py",
         "rm": "tools/train_reward_model.py", "rl": "tools/grpo.py"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """One way to place a stage on the cluster.

    ``distributed_optimizer`` and ``recompute`` (full activation
    recomputation, ``recompute_method`` / ``recompute_num_layers`` as
    megatron-core reads them) are the training options of the same names;
    ``rollout_batch`` is the RL stage's ``--rollout-batch``."""

    tp: int
    pp: int
    micro_batch: int
    distributed_optimizer: bool = False
    recompute: bool = False
    rollout_batch: int | None = None    # RL: rows sampled at once per rank (None: all of them)
    recompute_method: str = "uniform"
    recompute_num_layers: int = 1

    def flags(self) -> list[str]:
        """Command-line flags of the stage tool that select this layout."""
        out = ["--tensor-model-parallel-size", str(self.tp), "--pipeline-model-parallel-size",
               str(self.pp), "--micro-batch-size", str(self.micro_batch)]
        if self.distributed_optimizer:
            out.append("--use-distributed-optimizer")
        if self.recompute:
            out += ["--recompute-granularity", "full", "--recompute-method", self.recompute_method,
                    "--recompute-num-layers", str(self.recompute_num_layers)]
        if self.rollout_batch is not None:
            out += ["--rollout-batch", str(self.rollout_batch)]
        return out


@dataclasses.dataclass
class Recipe:
    """A stage's parsed configs: what its tool would run with."""

    stage: str
    train: TrainConfig
    model: ModelConfig
    extra: object | None = None

    @property
    def rl(self) -> RLConfig | None:
        return self.extra if self.stage == "rl" else None

    def train_for(self, layout: Layout) -> TrainConfig:
        """The TrainConfig with ``layout``'s TP, PP, micro batch, optimizer and
        full recompute (re-validated); selective recompute stays as given."""
        recompute = dict(recompute_granularity="full", recompute_method=layout.recompute_method,
                         recompute_num_layers=layout.recompute_num_layers) if layout.recompute else {}
        if not layout.recompute and self.train.recompute_granularity == "full":
            recompute = dict(recompute_granularity=None, recompute_method=None,
                             recompute_num_layers=None)
        return dataclasses.replace(self.train, tensor_model_parallel_size=layout.tp,
                                   pipeline_model_parallel_size=layout.pp,
                                   micro_batch_size=layout.micro_batch,
                                   use_distributed_optimizer=layout.distributed_optimizer,
                                   **recompute)

    @property
    def bf16(self) -> bool:
        """Mixed precision as a GPU run has it (TrainConfig: default on GPU)."""
        return self.train.bf16 is not False

    @property
    def flash_attention(self) -> bool:
        """transformer-engine's fused attention (no s x s scores kept) unless TE is refused."""
        return self.train.use_te is not False

    @property
    def sft_thd(self) -> bool:
        """SFT packs attend through cu_seqlens (TE on GPU): training/sft.py's choice."""
        if self.stage != "sft":
            return False
        mode = self.extra.packed_attention
        return mode == "thd" or (mode == "auto" and self.flash_attention)


def infer_stage(config: str | None) -> str:
    """The stage a recipe YAML is for: its ``rl:``, ``sft:`` or ``rm:`` section, else pretrain."""
    if not config:
        return "pretrain"
    sections = load_yaml(config)
    for stage in ("rl", "sft", "rm"):
        if stage in sections:
            return stage
    return "pretrain"


def load_recipe(stage: str, argv: list[str]) -> Recipe:
    """Parse ``argv`` (``--config`` and the stage tool's flags) as the tool does."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    extra = EXTRA[stage]
    if extra is None:
        train, model = parse_args(argv)
        return Recipe(stage, train, model)
    train, model, cfg = parse_args(argv, extra=extra)
    return Recipe(stage, train, model, cfg)


@dataclasses.dataclass(frozen=True)
class Facts:
    """What a valid layout implies."""

    world: int
    dp: int
    num_microbatches: int
    padded_vocab: int
    rows_per_rank: int | None = None      # RL: B/DP x G responses per rank


def check(recipe: Recipe, layout: Layout, world: int) -> Facts:
    """Every layout rule of the stage; the first broken one raises ``ConfigError``.

    Order and checks are the stage's own: ``Trainer.__init__`` (world by
    TP x PP, heads / query groups / FFN by TP and layers by PP, global batch
    by micro batch x DP), the vocabulary padded by Megatron's rule (a
    multiple of 128 x TP, so it always divides), then the stage's: RL's
    B x G = global batch, PP = 1 and B/DP x G by micro batch
    (``RLConfig``), reward models' PP = 1 (``RMConfig``), and SFT's micro
    batch 1 for cu_seqlens packs (the check in ``training/sft.py``'s
    forward step, here before the run)."""
    train = recipe.train_for(layout)
    dp = train.data_parallel_size(world)
    recipe.model.check_parallel(layout.tp, layout.pp)
    train.check_layers(recipe.model.num_layers)
    microbatches = train.num_microbatches(dp)
    vocab = recipe.model.padded_vocab_size(layout.tp)
    rows = None
    if recipe.stage == "rl":
        recipe.rl.check_global_batch(train.global_batch_size)
        recipe.rl.check_pipeline(layout.pp)
        rows = recipe.rl.rows_per_rank(dp, layout.micro_batch)
        if layout.rollout_batch is not None and not 1 <= layout.rollout_batch <= rows:
            raise ConfigError(f"rollout batch {layout.rollout_batch} must be between 1 and the "
                              f"{rows} responses per rank")
    if recipe.stage == "rm":
        recipe.extra.check_pipeline(layout.pp)
    if recipe.sft_thd and layout.micro_batch != 1:
        raise ConfigError("packed attention 'thd' needs --micro-batch-size 1")
    return Facts(world, dp, microbatches, vocab, rows)
