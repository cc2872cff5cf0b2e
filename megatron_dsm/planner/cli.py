"""tools/plan.py, and ``--dry-run`` of the stage tools.

    python tools/plan.py --config examples/configs/deepseekmath_rl_7b.yaml --nodes 4
    python tools/pretrain.py --config ... --dry-run      # cluster from NNODES / NPROC

The planner's own options are ``PlanConfig``'s; every other flag is the
stage tool's (``--tensor-model-parallel-size``, ``--micro-batch-size``, ...)
and is parsed by the tool's own parser, YAML under the command line.  Exit
status: 0 when the layout fits, 1 when it does not (the report names the
first layout that does, if any), 2 with one ``error:`` line for bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from megatron_dsm.checkpoint import CheckpointError
from megatron_dsm.config import ConfigError, add_arguments, field, from_namespace
from megatron_dsm.planner.report import render
from megatron_dsm.planner.search import Cluster, first_fit, judge
from megatron_dsm.planner.stages import STAGES, Layout, Recipe, infer_stage, load_recipe

@dataclasses.dataclass
class PlanConfig:
    nodes: int = field(1, help="nodes")
    gpus_per_node: int = field(8, help="GPUs (ranks) per node")
    gpu_memory: float = field(80.0, help="memory of one GPU, GiB")
    stage: str | None = field(None, choices=STAGES,
                              help="stage (default: the YAML's rl:, sft: or rm: section, else pretrain)")
    reserve: float = field(0.1, help="share of GPU memory kept for the CUDA context, NCCL buffers, "
                                     "workspaces and allocator fragmentation")
    search: bool = field(True, help="name the first layout that fits when the given one does not")

    def __post_init__(self):
        for name in ("nodes", "gpus_per_node"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.gpu_memory <= 0:
            raise ConfigError(f"--gpu-memory must be > 0 GiB, got {self.gpu_memory}")
        if not 0 <= self.reserve < 1:
            raise ConfigError(f"--reserve must be in [0, 1), got {self.reserve}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/plan.py", allow_abbrev=False,
        description="Check a stage's layout rules and estimate memory per GPU; name the first "
                    "layout that fits when the given one does not.",
        epilog="Every other flag is the stage tool's own (tools/pretrain.py, sft.py, "
               "train_reward_model.py, grpo.py --help), YAML under the command line. Exit 0: "
               "fits; 1: does not fit; 2: bad input.")
    p.add_argument("--config", default=None, help="YAML recipe of the stage")
    add_arguments(p, PlanConfig, "plan")
    return p


def given_layout(recipe: Recipe, plan: PlanConfig) -> Layout:
    """The layout the stage would run: its TP, PP, micro batch, distributed
    optimizer and full recompute as its training config has them, and RL's
    rollout batch."""
    t = recipe.train
    rollout = getattr(recipe.extra, "rollout_batch", None)
    full = t.recompute_granularity == "full"
    return Layout(t.tensor_model_parallel_size, t.pipeline_model_parallel_size, t.micro_batch_size,
                  distributed_optimizer=t.use_distributed_optimizer, recompute=full,
                  rollout_batch=rollout,
                  recompute_method=t.recompute_method if full else "uniform",
                  recompute_num_layers=t.recompute_num_layers if full else 1)


def plan(argv: list[str], defaults: dict | None = None) -> tuple[str, int]:
    """The report and exit status for ``argv``; ``defaults`` are PlanConfig
    values the command line overrides (the dry run's cluster from the environment)."""
    ns, rest = build_parser().parse_known_args(argv)
    cfg = from_namespace(PlanConfig, ns, defaults)
    stage = cfg.stage or infer_stage(ns.config)
    recipe = load_recipe(stage, (["--config", ns.config] if ns.config else []) + rest)
    cluster = Cluster(cfg.nodes, cfg.gpus_per_node, cfg.gpu_memory, cfg.reserve)
    layout = given_layout(recipe, cfg)
    verdict = judge(recipe, layout, cluster)
    found = None
    if not verdict.fits and cfg.search:
        found = first_fit(recipe, layout, cluster)
    return render(recipe, cluster, ns.config or "command line", verdict, found)


def main(argv: list[str] | None = None, defaults: dict | None = None) -> int:
    try:
        text, code = plan(sys.argv[1:] if argv is None else argv, defaults)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(text, flush=True)
    return code


def cluster_from_env(env=os.environ) -> dict:
    """PlanConfig defaults from the launch environment: NNODES and NPROC
    (examples/*.sh), else torchrun's WORLD_SIZE and LOCAL_WORLD_SIZE."""
    out = {}
    try:
        gpus = env.get("NPROC") or env.get("LOCAL_WORLD_SIZE")
        if gpus:
            out["gpus_per_node"] = int(gpus)
        if env.get("NNODES"):
            out["nodes"] = int(env["NNODES"])
        elif env.get("WORLD_SIZE") and gpus:
            out["nodes"] = max(int(env["WORLD_SIZE"]) // int(gpus), 1)
    except ValueError as e:
        raise ConfigError(f"launch environment: {e}") from None
    return out


def dry_run(stage: str, argv: list[str] | None = None) -> int:
    """``tools/<stage>.py ... --dry-run``: print the plan of the parsed
    arguments for the cluster the launch environment describes, build nothing."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--dry-run"]
    try:
        defaults = cluster_from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    if os.environ.get("RANK", "0") != "0":     # under torchrun one rank reports
        return 0
    return main(["--stage", stage, *argv], defaults)
