"""tools/recipe.py: run a whole-path recipe, show its plan and its status.

    python tools/recipe.py run --recipe examples/recipes/demo.yaml            # local, resumable
    python tools/recipe.py run --recipe R --dry-run                           # the plan, nothing runs
    python tools/recipe.py run --recipe R --from sft                          # rerun sft and what follows
    python tools/recipe.py run --recipe R --executor slurm                    # one sbatch job per stage
    python tools/recipe.py status --recipe R                                  # each stage's state and log
    python tools/recipe.py heldout --checkpoint C --tokenizer T --questions Q --prompt instruct --output O

``--set KEY=VALUE`` overrides any key of the recipe (``stages.pretrain.args.train_iters=20``);
``--output`` moves the whole run.  A bad recipe is one ``error:`` line (exit 2) before anything runs.
"""

from __future__ import annotations

import argparse
import sys

from megatron_dsm.checkpoint import CheckpointError
from megatron_dsm.config import ConfigError
from megatron_dsm.data.tokenizer import TokenizerError
from megatron_dsm.recipe import plan as plan_mod
from megatron_dsm.recipe import runner, slurm
from megatron_dsm.recipe.schema import STAGES, load
from megatron_dsm.recipe.stages import Context, check
from megatron_dsm.recipe.steps import LocalLauncher, SlurmLauncher, StepError, python_executable


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="recipe YAML (examples/recipes/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. stages.pretrain.args.train_iters=20 (repeatable)")
    p.add_argument("--output", default=None, help="run folder (default: the recipe's output)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tools/recipe.py", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the stages that are not done (or print the plan)")
    _recipe_args(r)
    r.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: here, stage after stage; slurm: a chain of sbatch jobs (afterok)")
    r.add_argument("--from", dest="start", choices=STAGES, default=None,
                   help="rerun this stage and every stage after it")
    r.add_argument("--stage", choices=STAGES, default=None, help="run this stage only (its inputs must be done)")
    r.add_argument("--dry-run", action="store_true", help="print the plan: stages, inputs, outputs, "
                                                          "commands, layouts and the memory check")
    r.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help=argparse.SUPPRESS)   # slurm: inside a stage's sbatch job
    s = sub.add_parser("status", help="each stage's state, time and log (and Slurm job)")
    _recipe_args(s)
    h = sub.add_parser("heldout", help="greedy accuracy of a checkpoint on held-out questions")
    h.add_argument("--checkpoint", required=True)
    h.add_argument("--tokenizer", required=True)
    h.add_argument("--questions", required=True, help="jsonl {id, question, answer}")
    h.add_argument("--prompt", choices=("instruct", "worksheet"), default="instruct")
    h.add_argument("--output", required=True, help="jsonl of answers (the result: OUTPUT.json)")
    h.add_argument("--max-new-tokens", type=int, default=32)
    return ap


def cmd_run(ns) -> int:
    recipe = load(ns.recipe, ns.overrides, ns.output)
    missing: list[str] | None = [] if ns.dry_run else None
    check(recipe, local=ns.executor == "local" and ns.launcher == "local" and not ns.dry_run, missing=missing)
    if ns.start and ns.start not in recipe.stages:
        raise ConfigError(f"--from {ns.start}: not a stage of {ns.recipe} ({', '.join(recipe.stages)})")
    if ns.stage and ns.stage not in recipe.stages:
        raise ConfigError(f"--stage {ns.stage}: not a stage of {ns.recipe} ({', '.join(recipe.stages)})")
    ctx = Context(recipe, recipe.executor.python or python_executable())
    if ns.dry_run:
        text, code = plan_mod.render(ctx, ns.start, ns.executor)
        print(text, flush=True)
        if missing:
            print("not on this machine (needed before a real run):\n" + "\n".join(f"  {m}" for m in missing),
                  flush=True)
        return code
    if ns.executor == "slurm" and ns.launcher == "local":
        slurm.submit(ctx, ns.start, ns.overrides, ns.recipe, ns.output)
        return 0
    launcher = SlurmLauncher(ctx.python) if ns.launcher == "slurm" else LocalLauncher(ctx.python)
    runner.run(ctx, launcher, start=ns.start, only=ns.stage)
    return 0


def cmd_status(ns) -> int:
    recipe = load(ns.recipe, ns.overrides, ns.output)
    print(slurm.status(Context(recipe, python_executable())), flush=True)
    return 0


def cmd_heldout(ns) -> int:
    from megatron_dsm.recipe.measure import heldout_accuracy  # noqa: PLC0415 - starts torch.distributed: this command only

    res = heldout_accuracy(ns.checkpoint, ns.tokenizer, ns.questions, ns.prompt, ns.output,
                           max_new_tokens=ns.max_new_tokens)
    print(f"heldout accuracy {res['accuracy']:.4f} ({res['n']} questions, prompt {res['prompt']}, "
          f"worked solutions {res['worked']:.3f})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "status": cmd_status, "heldout": cmd_heldout}[ns.command](ns)
    except (ConfigError, CheckpointError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except (StepError, slurm.SlurmError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
