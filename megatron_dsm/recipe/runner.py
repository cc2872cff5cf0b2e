"""Which stages of a recipe run, and running them.

A stage is *done* when its folder holds ``stage.json`` (written last,
atomically) whose section hash is the recipe's current one and whose
record of its upstream stages' run ids matches what they hold now.  So a
rerun skips every finished stage; deleting a stage's folder, or changing
its section, reruns it and, since its new run id no longer matches what
they recorded, every stage that read its outputs; ``--from STAGE`` reruns
that stage and what follows.

A stage that is not done starts from an empty folder unless the folder is
an unfinished run of the same section and inputs (``run.json``): then its
finished steps are skipped and its training tool resumes from its last
checkpoint.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from typing import Callable

from megatron_dsm.config import ConfigError
from megatron_dsm.io import read_json, write_json
from megatron_dsm.recipe import kinds  # noqa: F401  (registers the stage kinds)
from megatron_dsm.recipe.schema import Recipe
from megatron_dsm.recipe.stages import KINDS, Context
from megatron_dsm.recipe.steps import Launcher, StepError, run_steps
from megatron_dsm.recipe.summary import write_summary
from megatron_dsm.recipe.task import write_task

DONE, STALE, TODO = "done", "stale", "to run"


@dataclasses.dataclass
class StageState:
    name: str
    state: str               # done | stale | to run
    why: str = ""
    record: dict | None = None


def record_of(ctx: Context, name: str) -> dict | None:
    p = ctx.dir(name) / "stage.json"
    if not p.is_file():
        return None
    try:
        return read_json(p)
    except ValueError:
        return None


def states(ctx: Context, start: str | None = None) -> list[StageState]:
    """The state of every stage, in order (``start``: that stage and the
    following ones run whatever their state)."""
    out: list[StageState] = []
    current: dict[str, str | None] = {}
    rerun = False
    for name in ctx.recipe.stages:
        rec = record_of(ctx, name)
        rerun = rerun or name == start
        why = ""
        if rerun:
            why = f"--from {start}"
        elif rec is None or not rec.get("ok"):
            why = "not run" if rec is None else "failed"
        elif rec.get("section") != ctx.recipe.section_hash(name):
            why = "its section changed"
        else:
            ups = {u: current.get(u) for u in ctx.upstream(name)}
            stale = [u for u, rid in ups.items() if rec.get("upstream", {}).get(u) != rid]
            why = f"{', '.join(stale)} changed" if stale else ""
        state = DONE if not why else (STALE if rec is not None and rec.get("ok") else TODO)
        out.append(StageState(name, state, why, rec))
        current[name] = rec.get("run_id") if (state == DONE and rec) else None
    return out


def ensure_task(ctx: Context) -> None:
    """The task's files, written once (deterministic in the task section)."""
    task = ctx.recipe.task
    if task is None:
        return
    stamp = ctx.task_dir / "task.json"
    want = dataclasses.asdict(task)
    if stamp.is_file() and read_json(stamp).get("config") == want:
        return
    counts = write_task(task, ctx.task_dir)
    write_json(stamp, {**counts, "config": want})


def _prepare_folder(ctx: Context, name: str, inputs: dict) -> None:
    d = ctx.dir(name)
    marker = d / "run.json"
    if d.exists():
        same = marker.is_file() and read_json(marker).get("inputs") == inputs and not (d / "stage.json").exists()
        if not same:
            shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_json(marker, {"inputs": inputs, "started": time.time()})


def run_stage(ctx: Context, name: str, launcher: Launcher, say: Callable[[str], None] = print) -> dict:
    """Run one stage (its upstream stages must be done); returns its record."""
    recs = {u: record_of(ctx, u) for u in ctx.upstream(name)}
    missing = [u for u, r in recs.items() if not (r and r.get("ok"))]
    if missing:
        raise ConfigError(f"stage {name} needs {', '.join(missing)} to have run first")
    upstream = {u: r["run_id"] for u, r in recs.items()}
    section = ctx.recipe.section_hash(name)
    _prepare_folder(ctx, name, {"section": section, "upstream": upstream})
    ensure_task(ctx)
    kind, spec, d = KINDS[name], ctx.recipe.stages[name], ctx.dir(name)
    launcher.threads = spec.threads
    t0 = time.perf_counter()
    say(f"== {name}")
    try:
        run_steps(kind.steps(ctx, spec), d, launcher, d / "stage.log", say)
        metrics = kind.metrics(ctx, spec)
    except StepError as e:
        write_json(d / "stage.json", {"name": name, "ok": False, "error": str(e).splitlines()[0],
                                      "seconds": round(time.perf_counter() - t0, 1)})
        raise
    seconds = time.perf_counter() - t0
    previous = read_json(d / ".seconds.json").get("seconds", 0.0) if (d / ".seconds.json").is_file() else 0.0
    rec = {"name": name, "ok": True, "seconds": round(seconds + previous, 1), "metrics": metrics,
           "row": list(kind.row(metrics)), "run_id": uuid.uuid4().hex[:12], "section": section,
           "upstream": upstream, "log": str(d / "stage.log"), "finished": time.time()}
    write_json(d / "stage.json", rec)
    say(f"   {name}: {rec['seconds']:.0f}s  {rec['row'][2]}")
    return rec


def run(ctx: Context, launcher: Launcher, *, start: str | None = None, only: str | None = None,
        say: Callable[[str], None] = print) -> list[StageState]:
    """Run every stage that is not done (or just ``only``), then write the summary."""
    plan = states(ctx, start)
    for st in plan:
        if only is not None and st.name != only:
            continue
        if st.state == DONE and only is None:
            say(f"== {st.name}: done, skipped ({st.record.get('seconds', 0):.0f}s when it ran)")
            continue
        if st.state == DONE:
            say(f"== {st.name}: done, skipped")
            continue
        run_stage(ctx, st.name, launcher, say)
    final = states(ctx)
    say(write_summary(ctx, final))
    return final


def recipe_context(recipe: Recipe, python: str) -> Context:
    return Context(recipe, python)
