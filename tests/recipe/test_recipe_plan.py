"""The plan of a recipe without running it: the paper's 7B path on 16 nodes
x 8 GPUs (stage configs, layouts, the planner's memory check), and the
sbatch job of a stage under ``--executor slurm``."""

from pathlib import Path

from megatron_dsm.recipe import slurm
from megatron_dsm.recipe.cli import main
from megatron_dsm.recipe.schema import STAGES, load
from megatron_dsm.recipe.stages import Context

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "examples" / "recipes" / "deepseekmath_7b.yaml"
DEMO = REPO / "examples" / "recipes" / "demo.yaml"


def test_paper_recipe_dry_run_shows_every_stage_with_its_layout(capsys, tmp_path):
    assert main(["run", "--recipe", str(PAPER), "--dry-run", "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    for i, name in enumerate(STAGES, 1):
        assert f"[{i}/8] {name}: to run" in out
    for cfg in ("deepseekmath_base_7b", "deepseekmath_instruct_7b", "deepseekmath_rm_7b", "deepseekmath_rl_7b"):
        assert f"config examples/configs/{cfg}.yaml" in out
    assert out.count("16 node(s) x 8 GPUs = 128 GPUs of 80 GiB") == 4
    assert "plan: fits (TP=4 PP=1 DP=32)" in out          # pretrain, sft, reward model
    assert "plan: fits (TP=8 PP=1 DP=16)" in out          # rl: DP divides the 16 questions of a step
    assert "torchrun --nnodes=16 --nproc-per-node=8 tools/pretrain.py" in out
    assert "not on this machine (needed before a real run):" in out
    assert not (tmp_path / "run").exists()


def test_slurm_job_of_a_stage(tmp_path):
    recipe = load(DEMO, [], str(tmp_path / "run"))
    ctx = Context(recipe, "/venv/bin/python")
    text = slurm.job_script(ctx, "pretrain", str(DEMO), ["stages.pretrain.args.train_iters=5"], None)
    assert text.startswith("#!/bin/bash\n")
    for opt in ("--job-name=dsm-demo-pretrain", "--nodes=1", "--ntasks-per-node=2", "--time=00:30:00",
                f"--output={(tmp_path / 'run').resolve()}/slurm/pretrain-%j.out"):
        assert f"#SBATCH {opt}\n" in text
    assert (f"exec /venv/bin/python tools/recipe.py run --recipe {DEMO} --stage pretrain --launcher slurm "
            "--set stages.pretrain.args.train_iters=5") in text
    sft = slurm.job_script(ctx, "sft", str(DEMO), [], None)
    assert "#SBATCH --ntasks-per-node=1\n" in sft        # sft_dsm.sbatch: torchrun starts the ranks


def test_status_before_any_run(tmp_path, capsys):
    assert main(["status", "--recipe", str(DEMO), "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines()[1:9]]
    assert rows == [[name, "to"] for name in STAGES]
