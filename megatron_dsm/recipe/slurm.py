"""``--executor slurm``: the recipe as a chain of sbatch jobs, and ``status``.

Each stage that is not done becomes one job, submitted with
``--dependency=afterok:<the previous stage's job>`` so the chain runs in
order and stops at the first failure.  A job asks for the stage's own
nodes, tasks and CPUs (``nodes``, ``gpus_per_node``, ``cpus_per_task``,
GPUs when ``executor.gpus``) and runs ``tools/recipe.py run --stage NAME
--launcher slurm``, which runs the stage's steps inside the allocation:
training tools through examples/slurm/{pretrain,sft,grpo}_dsm.sbatch,
mining through examples/slurm/mine_corpus.sbatch (its stages become
datatrove job arrays).  The job ids go to ``OUTPUT/slurm/jobs.json``; each
job's log is ``OUTPUT/slurm/<stage>-<job>.out``; the last job prints the
stage table.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

from megatron_dsm.io import atomic_write, read_json, write_json
from megatron_dsm.recipe.runner import DONE, ensure_task, states
from megatron_dsm.recipe.stages import Context
from megatron_dsm.recipe.steps import REPO
from megatron_dsm.recipe.summary import table

# tasks per node of a stage's job: pretrain_dsm.sbatch starts one Slurm task
# per rank; the other batch scripts one per node (torchrun starts the ranks)
RANK_TASKS = ("pretrain",)


class SlurmError(RuntimeError):
    """sbatch or squeue failed; the message says how."""


def job_script(ctx: Context, name: str, recipe_path: str, overrides: list[str], output: str | None) -> str:
    spec, ex = ctx.recipe.stages[name], ctx.recipe.executor
    tasks = spec.gpus_per_node if name in RANK_TASKS else 1
    log = ctx.recipe.output.resolve() / "slurm" / f"{name}-%j.out"
    opts = [f"--job-name=dsm-{ctx.recipe.name}-{name}", f"--nodes={spec.nodes}",
            f"--ntasks-per-node={tasks}", f"--cpus-per-task={spec.cpus_per_task}",
            f"--time={spec.time or ex.time}", f"--output={log}"]
    if ex.partition:
        opts.append(f"--partition={ex.partition}")
    if ex.gpus:
        opts.append(f"--gpus-per-node={spec.gpus_per_node}")
    opts += ex.sbatch_args
    cmd = [ctx.python, "tools/recipe.py", "run", "--recipe", str(Path(recipe_path).resolve()),
           "--stage", name, "--launcher", "slurm"]
    for o in overrides:
        cmd += ["--set", o]
    if output:
        cmd += ["--output", str(Path(output).resolve())]
    lines = ["#!/bin/bash", f"# stage {name} of recipe {ctx.recipe.name} (tools/recipe.py run --executor slurm)"]
    lines += [f"#SBATCH {o}" for o in opts]
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(REPO))}", "export PYTHONUNBUFFERED=1",
              f"exec {shlex.join(cmd)}", ""]
    return "\n".join(lines)


def _sbatch(script: Path, after: str | None) -> str:
    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch is not on PATH: --executor slurm needs a Slurm client here")
    cmd = ["sbatch", "--parsable"] + ([f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"]
                                      if after else []) + [str(script)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SlurmError(f"sbatch {script.name}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip().split(";")[0]


def submit(ctx: Context, start: str | None, overrides: list[str], recipe_path: str,
           output: str | None) -> dict:
    """Submit the stages that are not done as a dependency chain; returns {stage: job id}."""
    folder = ctx.recipe.output / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    ensure_task(ctx)       # small and deterministic: written here so every job finds it
    jobs, after = {}, None
    for st in states(ctx, start):
        if st.state == DONE:
            print(f"{st.name}: done, not submitted", flush=True)
            continue
        script = folder / f"{st.name}.sbatch"
        atomic_write(script, job_script(ctx, st.name, recipe_path, overrides, output))
        after = _sbatch(script, after)
        jobs[st.name] = {"job": after, "script": str(script),
                         "log": str(folder / f"{st.name}-{after}.out"), "submitted": time.time()}
        print(f"{st.name}: job {after}" + (f" (after {list(jobs)[-2]})" if len(jobs) > 1 else ""), flush=True)
    write_json(folder / "jobs.json", jobs)
    if jobs:
        print(f"chain of {len(jobs)} jobs; `tools/recipe.py status --recipe {recipe_path}` shows them; "
              f"the last job's log ends with the table", flush=True)
    return jobs


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job it still knows (squeue, else scontrol)."""
    out: dict[str, str] = {}
    if not job_ids or shutil.which("squeue") is None:
        return out
    res = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"], capture_output=True, text=True)
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    for j in job_ids:
        if j in out or shutil.which("scontrol") is None:
            continue
        res = subprocess.run(["scontrol", "show", "job", j], capture_output=True, text=True)
        for tok in res.stdout.split():
            if tok.startswith("JobState="):
                out[j] = tok.split("=", 1)[1]
    return out


def status(ctx: Context) -> str:
    """Each stage: its state, time and log, and its Slurm job when one was submitted."""
    jobs_file = ctx.recipe.output / "slurm" / "jobs.json"
    jobs = read_json(jobs_file) if jobs_file.is_file() else {}
    live = slurm_states([j["job"] for j in jobs.values()])
    rows = [("stage", "state", "time", "job", "log")]
    for st in states(ctx):
        job = jobs.get(st.name, {})
        jid = job.get("job", "")
        state = st.state if not st.why else f"{st.state} ({st.why})"
        if jid and st.state != DONE:
            state = f"{live.get(jid, 'ended').lower()} (job {jid})"
        secs = (st.record or {}).get("seconds")
        log = job.get("log") or (st.record or {}).get("log") or str(ctx.dir(st.name) / "stage.log")
        rows.append((st.name, state, f"{secs:.0f}s" if secs else "-", jid or "-", log))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    text = "\n".join("  ".join(v.ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)
    return text + "\n\n" + table(states(ctx))
