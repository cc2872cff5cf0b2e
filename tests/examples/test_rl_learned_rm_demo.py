"""examples/rl_learned_rm_demo.sh at toy size end to end (slow: every stage
of the demo runs, each a few steps): SFT -> RM data from the policy's
samples -> ORM and PRM -> GRPO+OS (ORM), GRPO+PS (PRM), iterative -> the
table, the PNG and the two last lines the issue fixes."""

import json
import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.slow

TINY = ["--sft-max-steps", "20", "--sft-eval-every", "20", "--rm-questions", "12", "--rm-valid-questions", "8",
        "--rm-solutions", "2", "--rm-shepherd-samples", "2", "--rm-steps", "4", "--step-set-size", "20",
        "--rl-steps", "2", "--rl-eval-every", "2", "--iterative-rm-steps", "2", "--hack-samples", "1",
        "--prompts-per-step", "4", "--group-size", "2", "--micro-batch-size", "8", "--global-batch-size", "8",
        "--rl-eval-size", "20", "--task-train-size", "400", "--task-heldout-size", "40"]


def test_learned_rm_demo_end_to_end(tmp_path, repo_root):
    env = dict(os.environ, WORKDIR=str(tmp_path / "work"), OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", "examples/rl_learned_rm_demo.sh", *TINY], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert re.fullmatch(r"prm step auc=\d\.\d\d position_baseline=\d\.\d\d", lines[-2]), lines[-2]
    assert re.fullmatch(r"heldout accuracy sft=\d\.\d{3} grpo_os_orm=\d\.\d{3} grpo_ps_prm=\d\.\d{3} "
                        r"iterative=\d\.\d{3}", lines[-1]), lines[-1]
    assert any(line.startswith("OS - PS:") for line in lines)
    work = tmp_path / "work"
    assert (work / "heldout_accuracy.png").stat().st_size > 0
    summary = json.loads((work / "summary.json").read_text())
    assert {"grpo_os_orm", "grpo_ps_prm", "iterative"} <= set(summary)
    for tag in ("grpo_os_orm", "grpo_ps_prm", "iterative"):
        assert summary[tag]["curve"]["eval_step"] == [0, 2]
        assert "rm score" in summary[tag]["hack"]
    assert "iterative RL: reward model refresh 1" in p.stdout
