"""The end of a recipe run: one table (a row per stage: what went in, what
came out, the time it took, its measured effect), the same as
``OUTPUT/summary.json`` (``{"stages": [{"name", "ok", "seconds",
"metrics"}, ...]}``) and ``OUTPUT/curves.png`` with the curves of the
training stages (from their ``--log-json`` records)."""

from __future__ import annotations

from pathlib import Path

from megatron_dsm.io import atomic_path, write_json
from megatron_dsm.recipe import glue

# the curves of each training stage: (log key, label)
CURVES = {
    "pretrain": [("lm loss", "train loss")],
    "sft": [("lm loss", "train loss")],
    "reward_model": [("rm loss", "train loss"), ("accuracy", "train accuracy")],
    "rl": [("reward mean", "reward"), ("heldout accuracy", "held-out accuracy")],
}


def table(stages: list) -> str:
    """The stage table as text (``stages``: runner.StageState)."""
    head = ("stage", "in", "out", "time", "effect")
    rows = []
    for st in stages:
        rec = st.record or {}
        if st.state == "done":
            i, o, effect = rec.get("row") or ("", "", "")
            rows.append((st.name, i, o, f"{rec.get('seconds', 0):.0f}s", effect))
        else:
            rows.append((st.name, "", "", "-", f"{st.state}: {st.why}" if st.why else st.state))
    widths = [max(len(str(r[k])) for r in [head, *rows]) for k in range(4)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4] for r in [head, *rows]]
    return "\n".join([lines[0], "-" * max(len(l) for l in lines), *lines[1:]])


def write_summary(ctx, stages: list) -> str:
    """summary.json, curves.png and the table (returned)."""
    out = ctx.recipe.output
    doc = {"recipe": ctx.recipe.path, "stages": [
        {"name": st.name, "ok": st.state == "done", "seconds": (st.record or {}).get("seconds"),
         "metrics": (st.record or {}).get("metrics", {}), "log": (st.record or {}).get("log")}
        for st in stages]}
    write_json(out / "summary.json", doc)
    text = table(stages)
    png = plot_curves(ctx, out / "curves.png")
    total = sum((st.record or {}).get("seconds") or 0 for st in stages if st.state == "done")
    foot = f"\n{sum(st.state == 'done' for st in stages)}/{len(stages)} stages done, {total:.0f}s of stage time; "
    foot += f"{out / 'summary.json'}" + (f", {png}" if png else "")
    return text + foot


def plot_curves(ctx, path: Path) -> Path | None:
    """One panel per training stage that logged; None when none did."""
    series = {}
    for name, keys in CURVES.items():
        if name not in ctx.recipe.stages:
            continue
        recs = glue.log_records(ctx.dir(name) / "log.jsonl")
        lines = [(label, [(r["iteration"], r[k]) for r in recs if k in r]) for k, label in keys]
        lines = [(label, pts) for label, pts in lines if pts]
        if lines:
            series[name] = lines
    if not series:
        return None
    import matplotlib  # optional dependency: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2), squeeze=False)
    for ax, (name, lines) in zip(axes[0], series.items()):
        for label, pts in lines:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) < 8 else "-",
                    label=label, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
