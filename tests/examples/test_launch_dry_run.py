"""The launch scripts and Slurm batches keep a recipe's layout: with TP and PP
unset, the arguments they would launch with parse to the YAML's TP (DRY_RUN=1
prints the torchrun command and the planner's report of the parsed layout,
and starts nothing)."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE = "examples/configs/deepseekmath_base_7b.yaml"
RL = "examples/configs/deepseekmath_rl_7b.yaml"
CONTRACT = ("TP", "PP", "NNODES", "NPROC", "NODE_RANK", "CONFIG", "DATA_PATH", "LOAD", "SAVE_DIR",
            "TRAIN_ITERS", "SAVE_INTERVAL", "MIXTURE", "LAUNCHER", "DRY_RUN", "WORLD_SIZE", "RANK")


def dry_run(cmd, tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if k not in CONTRACT and not k.startswith("SLURM_")}
    base.update(PY=sys.executable, PYTHON=sys.executable, PYTHONWARNINGS="ignore", DRY_RUN="1",
                SAVE_DIR=str(tmp_path / "save"), DEMO_DIR=str(tmp_path / "demo"))
    base.update(env)
    p = subprocess.run(cmd, cwd=REPO, env=base, capture_output=True, text=True, timeout=600)
    assert not (tmp_path / "save").exists() and not (tmp_path / "demo").exists()
    layout = re.search(r"^layout: (TP=\d+ PP=\d+(?: DP=\d+)?)", p.stdout, re.MULTILINE)
    assert layout, p.stdout + p.stderr[-3000:]
    return p, layout.group(1)


def launch_line(p) -> str:
    return next(ln for ln in p.stdout.splitlines() if ln.startswith("launch: "))


def test_grpo_script_keeps_the_recipe_tp(tmp_path):
    p, layout = dry_run(["bash", "examples/grpo_dsm.sh"], tmp_path, CONFIG=RL, NPROC="8", NNODES="4")
    assert layout == "TP=4 PP=1 DP=8" and p.returncode == 0
    line = launch_line(p)
    assert "--nproc-per-node 8 --nnodes 4" in line and "tools/grpo.py --config " + RL in line
    assert "--tensor-model-parallel-size" not in line and "--pipeline-model-parallel-size" not in line
    assert "--save-interval" not in line            # the recipe's save_interval holds too


def test_grpo_script_tp_from_the_environment_wins(tmp_path):
    p, layout = dry_run(["bash", "examples/grpo_dsm.sh"], tmp_path, CONFIG=RL, NPROC="8", NNODES="4",
                        TP="2")
    assert layout == "TP=2 PP=1 DP=16"
    assert "--tensor-model-parallel-size 2" in launch_line(p)
    # the recipe shards the Adam state over DP=16: TP=2 fits
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == "plan: fits (TP=2 PP=1 DP=16)"
    # without the distributed optimizer TP=2 holds a whole 7B Adam state per 2 GPUs: the
    # planner says so and names a layout (extra arguments pass through the script)
    p, layout = dry_run(["bash", "examples/grpo_dsm.sh", "--use-distributed-optimizer", "false"],
                        tmp_path, CONFIG=RL, NPROC="8", NNODES="4", TP="2")
    assert layout == "TP=2 PP=1 DP=16" and "--use-distributed-optimizer false" in launch_line(p)
    assert p.returncode == 1 and "first layout that fits" in p.stdout.splitlines()[-1]


def test_pretrain_script_keeps_the_recipe_tp(tmp_path):
    p, layout = dry_run(["bash", "examples/pretrain_dsm.sh"], tmp_path, CONFIG=BASE, NPROC="8",
                        NNODES="64")
    assert layout == "TP=4 PP=1 DP=128" and p.returncode == 0, p.stdout
    assert "--tensor-model-parallel-size" not in launch_line(p)


def test_slurm_batches_keep_the_recipe_tp(tmp_path):
    slurm = dict(SLURM_JOB_ID="42", MASTER_ADDR="127.0.0.1")
    p, layout = dry_run(["bash", "examples/slurm/pretrain_dsm.sbatch"], tmp_path, CONFIG=BASE,
                        SLURM_NNODES="32", SLURM_NTASKS_PER_NODE="8", **slurm)
    assert layout == "TP=4 PP=1 DP=64" and p.returncode == 0, p.stdout
    p, layout = dry_run(["bash", "examples/slurm/grpo_dsm.sbatch"], tmp_path, CONFIG=RL,
                        SLURM_NNODES="8", SLURM_GPUS_ON_NODE="8", **slurm)
    assert layout == "TP=4 PP=1 DP=16" and p.returncode == 0, p.stdout
    assert "--nnodes 8" in launch_line(p)
