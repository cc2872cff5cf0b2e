"""``tools/recipe.py run --dry-run``: the plan of a recipe, nothing run.

For every stage: whether it is done or would run (and why), what it reads
(resolved to paths), what it writes, its commands as they would be
launched, its nodes and ranks, and for a training stage the planner's
layout rules and memory per GPU (``megatron_dsm.planner``, the report of
``tools/plan.py``) for the stage's own arguments on its nodes.  Exit status
1 when the planner finds a stage's layout does not fit, else 0.
"""

from __future__ import annotations

from megatron_dsm.config import ConfigError
from megatron_dsm.planner.cli import plan as plan_layout
from megatron_dsm.recipe.runner import states
from megatron_dsm.recipe.stages import KINDS, OUTPUTS, Context
from megatron_dsm.recipe.steps import Train

DROP = {"--load": 1, "--finetune": 0, "--save": 1, "--log-json": 1}   # flags the planner need not see


def _planner_args(ctx: Context, step: Train) -> list[str]:
    args, skip = [], 0
    for a in step.args:
        if skip:
            skip -= 1
            continue
        if a in DROP:
            skip = DROP[a]
            continue
        args.append(a)
    tok = ctx.recipe.tokenizer
    if "vocab_size" not in ctx.recipe.model and "--vocab-size" not in args and tok.trained:
        args += ["--vocab-size", str(tok.vocab_size)]    # the data that records it does not exist yet
    return args


def layout_report(ctx: Context, name: str, step: Train) -> tuple[list[str], int]:
    """The planner's report for a training step, its lines indented; its exit status."""
    ex = ctx.recipe.executor
    argv = ["--stage", KINDS[name].plan_stage, "--nodes", str(step.nodes), "--gpus-per-node", str(step.nproc),
            "--gpu-memory", str(ex.gpu_memory), *_planner_args(ctx, step)]
    try:
        text, code = plan_layout(argv)
    except ConfigError as e:
        return [f"    layout: error: {e}"], 1
    lines = text.splitlines()
    cut = next((i for i, l in enumerate(lines) if l.startswith("formulas:")), len(lines))
    body = lines[:cut] + [l for l in lines[cut:] if l.startswith("plan:")]
    return ["    " + l for l in body], code


def _inputs(ctx: Context, name: str) -> list[str]:
    spec, kind = ctx.recipe.stages[name], KINDS[name]
    out = []
    for fname, okind in kind.inputs(spec).items():
        ref = getattr(spec, fname)
        src = f" (stage {ref})" if ref in ctx.recipe.stages else (" (task)" if ref == "task" else "")
        out.append(f"{fname}: {ctx.resolve(ref, okind)}{src}")
    for fname in ("input", "seed_positives", "negatives"):
        if name == "mine" and getattr(spec, fname):
            vals = getattr(spec, fname)
            out.append(f"{fname}: {', '.join(vals) if isinstance(vals, list) else vals}")
    if kind.uses_tokenizer:
        out.append(f"tokenizer: {ctx.tokenizer or 'byte'}")
    return out


def render(ctx: Context, start: str | None, executor: str) -> tuple[str, int]:
    """The plan text and exit status."""
    r = ctx.recipe
    lines = [f"recipe {r.name} ({r.path}) -> {r.output}; executor {executor}"]
    if r.description:
        lines.append(f"  {r.description}")
    worst = 0
    plan = states(ctx, start)
    for i, st in enumerate(plan, 1):
        spec = r.stages[st.name]
        what = "done, skipped" if st.state == "done" else f"{st.state} ({st.why})"
        lines.append(f"[{i}/{len(plan)}] {st.name}: {what}")
        lines += [f"  in   {x}" for x in _inputs(ctx, st.name)]
        lines += [f"  out  {ctx.dir(st.name) / p}" for p in OUTPUTS[st.name].values()]
        lines.append(f"  on   {spec.nodes} node(s) x {spec.gpus_per_node} rank(s)"
                     + (f", config {spec.config}" if spec.config else ""))
        for step in KINDS[st.name].steps(ctx, spec):
            lines.append(f"  run  {step.describe()}")
            if isinstance(step, Train) and KINDS[st.name].plan_stage:
                report, code = layout_report(ctx, st.name, step)
                lines += report
                worst = max(worst, code)
    return "\n".join(lines), worst
