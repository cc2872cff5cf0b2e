"""Each training stage's measured effect, read from what its tools wrote:
the ``--log-json`` records, the evaluation lines of the stage log, the
held-out accuracy files of ``tools/recipe.py heldout`` and the metrics of
``tools/evaluate.py``; and the table row that shows it."""

from __future__ import annotations

from pathlib import Path

from megatron_dsm.io import read_json
from megatron_dsm.recipe import glue

LOG = "stage.log"


def _heldout(d: Path, tag: str = "heldout") -> dict:
    p = d / f"{tag}.jsonl.json"
    return read_json(p) if p.is_file() else {}


def _first_last(records: list[dict], key: str) -> tuple[float | None, float | None]:
    vals = [r[key] for r in records if key in r]
    return (vals[0], vals[-1]) if vals else (None, None)


def _base(d: Path, loss_key: str) -> dict:
    recs = glue.log_records(d / "log.jsonl")
    first, last = _first_last(recs, loss_key)
    out = {"iterations": recs[-1]["iteration"] if recs else 0, f"train_{loss_key.replace(' ', '_')}": last,
           f"train_{loss_key.replace(' ', '_')}_first": first}
    held = _heldout(d)
    if held:
        out["heldout_accuracy"] = round(held["accuracy"], 4)
        out["heldout_prompt"] = held["prompt"]
        out["heldout_worked_share"] = round(held["worked"], 4)
    return out


def pretrain_metrics(ctx, spec) -> dict:
    d = ctx.dir("pretrain")
    out = _base(d, "lm loss")
    vals = [f["lm loss"] for title, _, f in glue.eval_lines(d / LOG) if title.startswith("validation")
            and "lm loss" in f]
    if vals:
        out["heldout_loss_before"], out["heldout_loss_after"] = round(vals[0], 4), round(vals[-1], 4)
    inst = _heldout(d, "heldout_instruct")
    if inst:
        out["heldout_accuracy_instruct"] = round(inst["accuracy"], 4)
    return out


def sft_metrics(ctx, spec) -> dict:
    return _base(ctx.dir("sft"), "lm loss")


def rm_metrics(ctx, spec) -> dict:
    d = ctx.dir("reward_model")
    out = _base(d, "rm loss")
    samples = d / "samples_metrics.json"
    if samples.is_file():
        recs = [r for r in glue.log_records(d / "samples.jsonl")]
        n = sum(len(r["correct"]) for r in recs)
        out["samples"] = n
        out["samples_correct"] = round(sum(sum(r["correct"]) for r in recs) / max(n, 1), 4)
    evals = [f for title, _, f in glue.eval_lines(d / LOG) if title == "validation"]
    if evals:
        out["heldout_auc_before"] = evals[0].get("auc")
        out["heldout_auc"] = evals[-1].get("auc")
        out["heldout_rm_accuracy"] = evals[-1].get("accuracy")
    return out


def rl_metrics(ctx, spec) -> dict:
    d = ctx.dir("rl")
    out = _base(d, "reward mean")
    recs = glue.log_records(d / "log.jsonl")
    loop = [r["heldout accuracy"] for r in recs if "heldout accuracy" in r]
    start = [f["heldout accuracy"] for title, it, f in glue.eval_lines(d / LOG)
             if it == 0 and "heldout accuracy" in f]
    if start:
        out["loop_heldout_accuracy_start"] = start[0]
    if loop:
        out["loop_heldout_accuracy_end"] = loop[-1]
    out["reward"] = spec.reward
    return out


def eval_metrics(ctx, spec) -> dict:
    """tools/evaluate.py's metrics.json: {benchmark: {accuracy, count, samples}}."""
    out = {}
    for name, v in read_json(ctx.dir("evaluate") / "metrics.json").items():
        if isinstance(v, dict) and "accuracy" in v:
            out[f"{name}_accuracy"] = v["accuracy"]
            out[f"{name}_n"] = v.get("count")
    return out


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def mine_row(m: dict) -> tuple[str, str, str]:
    task = f", task pages {m['task_pages_recall']:.3f}" if m.get("task_pages_recall") is not None else ""
    return (f"{m['pages_in']} pages ({m['math_pages_in']} math)",
            f"{m['pages_recalled']} pages, {m['iterations']} iterations",
            f"precision {m['precision']:.3f} recall {m['recall']:.3f}{task}")


def train_row(m: dict) -> tuple[str, str, str]:
    """In / out / effect of a training or evaluation stage (see ``summary.row``)."""
    parts = []
    if "heldout_loss_before" in m:
        parts.append(f"held-out loss {m['heldout_loss_before']:.2f} -> {m['heldout_loss_after']:.2f}")
    if "heldout_auc" in m:
        parts.append(f"held-out AUC {_fmt(m['heldout_auc'])}")
    if "heldout_accuracy" in m:
        parts.append(f"held-out accuracy {m['heldout_accuracy']:.3f}")
    accs = {k[:-len("_accuracy")]: v for k, v in m.items() if k.endswith("_accuracy") and not k.startswith(
        ("heldout", "loop", "samples"))}
    parts += [f"{k} {_fmt(v)}" for k, v in accs.items()]
    if "reward" in m:
        parts.append(f"reward {m['reward']}")
    inp = f"{m['samples']:,} graded samples" if m.get("samples") else ""
    return inp, f"{m.get('iterations', '-')} iterations" if "iterations" in m else "", "; ".join(parts)
