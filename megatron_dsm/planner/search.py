"""Judge a layout on a cluster, and find the first one that fits.

Order of the search (the first valid layout whose peak fits is named):

1. memory options, fewest first: none, then the distributed optimizer,
   full recompute (the recipe's method and layers where they fit the
   stage, else uniform over single layers), chunked rollouts (RL), then
   pairs of them, then all three; options the recipe has stay on;
2. PP: the recipe's, then 1, 2, 3, ... (divisors of the layers, up to 16):
   pipeline bubbles cost more than TP inside a node;
3. TP in {1, 2, 4, 8} within a node: the recipe's, then larger ones (less
   memory per GPU), then smaller ones (more data parallelism);
4. micro batch: the recipe's, then its smaller divisors;
5. RL rollout batch (rows sampled at once per rank): all, then halves.
"""

from __future__ import annotations

import dataclasses
import itertools

from megatron_dsm.config import ConfigError
from megatron_dsm.planner.memory import Estimate, GiB, estimate
from megatron_dsm.planner.stages import Facts, Layout, Recipe, check

TP_CHOICES = (1, 2, 4, 8)
MAX_PP = 16


@dataclasses.dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus_per_node: int
    gpu_memory: float            # GiB per GPU
    reserve: float = 0.1         # share kept for CUDA context, NCCL, workspaces, fragmentation

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def usable(self) -> int:
        return int(self.gpu_memory * (1.0 - self.reserve) * GiB)


@dataclasses.dataclass
class Verdict:
    layout: Layout
    error: str | None = None         # the first broken layout rule
    facts: Facts | None = None
    estimate: Estimate | None = None
    usable: int = 0

    @property
    def fits(self) -> bool:
        return self.error is None and self.estimate.peak[1] <= self.usable


def judge(recipe: Recipe, layout: Layout, cluster: Cluster) -> Verdict:
    """The rules, then (for a valid layout) the memory estimate."""
    try:
        facts = check(recipe, layout, cluster.world)
    except ConfigError as e:
        return Verdict(layout, error=str(e))
    return Verdict(layout, facts=facts, estimate=estimate(recipe, layout, facts),
                   usable=cluster.usable)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def feature_order(rl: bool, given: Layout) -> list[tuple[bool, bool, bool]]:
    """(distributed optimizer, recompute, chunked rollouts), fewest first."""
    names = 3 if rl else 2
    combos = []
    for k in range(names + 1):
        for on in itertools.combinations(range(names), k):
            combos.append(tuple(i in on for i in range(3)))
    asked = (given.distributed_optimizer, given.recompute, given.rollout_batch is not None)
    return [c for c in combos if all(c[i] or not asked[i] for i in range(3))]


def pp_order(recipe: Recipe, given: Layout, cluster: Cluster) -> list[int]:
    rest = [d for d in _divisors(recipe.model.num_layers) if d <= min(MAX_PP, cluster.world)]
    return [given.pp] + [d for d in rest if d != given.pp]


def tp_order(given: Layout, cluster: Cluster) -> list[int]:
    allowed = [t for t in TP_CHOICES if t <= cluster.gpus_per_node]
    larger = [t for t in allowed if t > given.tp]
    smaller = [t for t in reversed(allowed) if t < given.tp]
    return [given.tp] + larger + smaller


def rollout_batches(rows: int | None, chunked: bool, given: Layout) -> list[int | None]:
    if not chunked:
        return [None]
    sizes = {rows >> k for k in range(1, rows.bit_length()) if rows >> k}
    if given.rollout_batch is not None and given.rollout_batch < rows:
        sizes.add(given.rollout_batch)
    return sorted(sizes, reverse=True)


def _recompute_for(given: Layout, layers: int) -> tuple[str, int]:
    """The recompute method and layers of a proposed layout with ``layers``
    per stage: the given ones when they fit the stage, else uniform over 1."""
    if given.recompute and given.recompute_num_layers <= layers:
        return given.recompute_method, given.recompute_num_layers
    return "uniform", 1


def first_fit(recipe: Recipe, given: Layout, cluster: Cluster) -> Verdict | None:
    """The first layout in the search order that is valid and fits, else None."""
    micro = [given.micro_batch] + [d for d in reversed(_divisors(given.micro_batch))
                                   if d != given.micro_batch]
    for dist, recompute, chunked in feature_order(recipe.stage == "rl", given):
        for pp, tp, mb in itertools.product(pp_order(recipe, given, cluster),
                                            tp_order(given, cluster), micro):
            base = Layout(tp, pp, mb, dist, recompute, None,
                          *_recompute_for(given, recipe.model.num_layers // pp))
            try:
                facts = check(recipe, base, cluster.world)
            except ConfigError:
                continue
            for rb in rollout_batches(facts.rows_per_rank, chunked, given):
                verdict = judge(recipe, dataclasses.replace(base, rollout_batch=rb), cluster)
                if verdict.fits:
                    return verdict
    return None
