"""The planner's printed report: the layout, its rules, a memory table, the verdict."""

from __future__ import annotations

from megatron_dsm.planner.memory import GiB
from megatron_dsm.planner.search import Cluster, Verdict
from megatron_dsm.planner.stages import TOOLS, Recipe

FORMULAS = (
    "states per parameter: 2 (bf16 weights) + 4 (fp32 gradient buffer) + 12 (fp32 master, Adam m, v;"
    " / DP with the distributed optimizer) bytes",
    "activations per layer: s*b*(4h/[TP with SP] + (2h + 2*g*d + 3f)/TP) x 2 B (Korthikanti et al."
    " 2022 for Llama: SwiGLU, RMSNorm, fused attention, no dropout); full recompute keeps s*b*h x 2 B"
    " per recomputed layer (uniform: per group of k) and rebuilds one (group) at a time; 1F1B: the"
    " first stage holds min(PP, m) micro-batches",
)
RL_FORMULA = "KV cache: L x 2 x rows x s x (g/TP) x d x 2 B; rows = B/DP x G, or the rollout batch"


def rules(recipe: Recipe, v: Verdict) -> str:
    """The rules a valid layout passed, with its numbers."""
    lo, f, m, t = v.layout, v.facts, recipe.model, recipe.train
    out = [f"world {f.world} = TP {lo.tp} x PP {lo.pp} x DP {f.dp}",
           f"heads {m.num_attention_heads}, query groups {m.kv_heads}, FFN {m.ffn_hidden_size} by "
           f"TP {lo.tp}", f"layers {m.num_layers} by PP {lo.pp}",
           f"global batch {t.global_batch_size} = micro {lo.micro_batch} x DP {f.dp} x "
           f"{f.num_microbatches}", f"vocab padded to {f.padded_vocab}"]
    if recipe.stage == "rl":
        rl = recipe.rl
        out += [f"B x G = {rl.prompts_per_step} x {rl.group_size} = global batch",
                "PP = 1 (in-process rollouts)", f"B/DP x G = {f.rows_per_rank} rows per rank by micro {lo.micro_batch}"]
    if recipe.stage == "rm":
        out.append("PP = 1 (in-process scoring)")
    if recipe.sft_thd:
        out.append("micro batch 1 (cu_seqlens packs)")
    return "  rules ok: " + "; ".join(out)


def gib(n: int) -> str:
    return f"{n / GiB:.2f}"


def header(recipe: Recipe, cluster: Cluster, source: str) -> list[str]:
    m = recipe.model
    return [
        f"plan: stage {recipe.stage} ({TOOLS[recipe.stage]}), {cluster.nodes} node(s) x "
        f"{cluster.gpus_per_node} GPUs = {cluster.world} GPUs of {cluster.gpu_memory:g} GiB",
        f"recipe: {source}; model {recipe.train.model}: {m.num_layers} layers, hidden "
        f"{m.hidden_size}, heads {m.num_attention_heads} (query groups {m.kv_heads}), FFN "
        f"{m.ffn_hidden_size}, seq {m.seq_length}; global batch {recipe.train.global_batch_size}",
    ]


def describe(recipe: Recipe, v: Verdict) -> str:
    lo = v.layout
    parts = [f"TP={lo.tp} PP={lo.pp}" + (f" DP={v.facts.dp}" if v.facts else ""),
             f"micro batch {lo.micro_batch}"]
    if v.facts:
        parts[-1] += f" x {v.facts.num_microbatches} micro-batches"
        if v.facts.rows_per_rank is not None:
            rb = lo.rollout_batch
            parts.append(f"{v.facts.rows_per_rank} responses per rank, rollout batch "
                         + (f"{rb}" if rb is not None else "all"))
    parts.append("distributed optimizer " + ("on" if lo.distributed_optimizer else "off"))
    if lo.recompute:
        parts.append(f"recompute full ({lo.recompute_method}, {lo.recompute_num_layers} layer"
                     f"{'s' if lo.recompute_num_layers > 1 else ''})")
    else:
        parts.append("recompute " + (recipe.train.recompute_granularity or "none"))
    return " | ".join(parts)


def table(v: Verdict, cluster: Cluster) -> list[str]:
    est = v.estimate
    names = [n for n, _ in est.rows] + ["total", "usable"]
    w = max(len(n) for n in names) + 2
    cols = est.columns
    out = ["  " + "memory per GPU (GiB)".ljust(w) + "".join(c.rjust(12) for c in cols)]
    for name, vals in est.rows:
        cells = "".join((gib(vals[c]) if c in vals else "-").rjust(12) for c in cols)
        out.append("  " + name.ljust(w) + cells)
    out.append("  " + "total".ljust(w) + "".join(gib(est.total(c)).rjust(12) for c in cols))
    usable = f"{cluster.gpu_memory:g} GiB less {cluster.reserve:.0%} reserve"
    out.append("  " + "usable".ljust(w) + gib(v.usable).rjust(12) + f"   ({usable})")
    phase, peak = est.peak
    verdict = "fits" if v.fits else "does not fit"
    out.append(f"  {verdict}: peak {gib(peak)} GiB ({phase}) of {gib(v.usable)} GiB usable, "
               f"{est.params:,} parameters of the trained model on the fullest GPU")
    return out


def layout_block(recipe: Recipe, v: Verdict, cluster: Cluster, title: str) -> list[str]:
    out = [f"{title}: {describe(recipe, v)}"]
    if v.error:
        out.append(f"  does not fit: {v.error}")
        return out
    out += [rules(recipe, v)] + table(v, cluster)
    return out


def render(recipe: Recipe, cluster: Cluster, source: str, given: Verdict,
           found: Verdict | None) -> tuple[str, int]:
    """The report and the exit status: 0 when the given layout fits, else 1."""
    lines = header(recipe, cluster, source) + layout_block(recipe, given, cluster, "layout")
    if given.fits:
        final, code = f"plan: fits (TP={given.layout.tp} PP={given.layout.pp} DP={given.facts.dp})", 0
    elif found is None:
        final, code = (f"plan: does not fit, and no layout of TP in 1/2/4/8, PP, distributed "
                       f"optimizer, recompute and micro batch does on {cluster.nodes} node(s) x "
                       f"{cluster.gpus_per_node} GPUs of {cluster.gpu_memory:g} GiB"), 1
    else:
        lines += layout_block(recipe, found, cluster, "first layout that fits")
        final, code = (f"plan: does not fit; first layout that fits: TP={found.layout.tp} "
                       f"PP={found.layout.pp} DP={found.facts.dp} (run with: "
                       f"{' '.join(found.layout.flags())})"), 1
    formulas = FORMULAS + ((RL_FORMULA,) if recipe.stage == "rl" else ())
    lines += ["formulas:"] + ["  " + f for f in formulas] + [final]
    return "\n".join(lines), code
