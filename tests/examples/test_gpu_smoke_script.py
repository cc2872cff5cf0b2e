"""benchmarks/gpu_smoke.sh can only be measured on a GPU; these tests run its
code paths on the CPU (--cpu-check) so the script is known to work before a
GPU hour is spent on it: the throughput part (its MFU arithmetic and peak
table) and the TP=2 part (benchmarks/gpu_path_check.py: a pretraining step, a
save and a load, a mixed-length generation batch against single-row
generation)."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("gpu_smoke", REPO / "benchmarks" / "gpu_smoke.py")
gpu_smoke = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_smoke)


def run(*args, timeout=300):
    return subprocess.run(["bash", "benchmarks/gpu_smoke.sh", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout,
                          env={"PY": sys.executable, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0),  # contains "H20" too: the longest name wins
    ("NVIDIA H20", 148.0), ("NVIDIA GH200 480GB", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("Tesla V100-SXM2-32GB", None)])
def test_peak_table_longest_name_wins(name, peak):
    assert gpu_smoke.peak_tflops(name) == peak


@pytest.mark.parametrize("part, name", [("", "gpu_smoke"), ("tp2", "gpu_path_check")])
def test_refuses_without_cuda_in_one_line(part, name):
    p = run(*([part] if part else []), "--steps", "1")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"{name}: no CUDA device; run this on a GPU host (or --cpu-check"
                                             + (" to test the script)" if name == "gpu_smoke" else ")")]


def test_cpu_check_runs_the_script_and_its_mfu_arithmetic():
    p = run("throughput", "--cpu-check", "--model", "tiny", "--vocab-size", "512", "--seq-length", "64",
            "--micro-batch-size", "2", "--steps", "3", "--warmup", "1", "--peak-tflops", "0.5")
    assert p.returncode == 0, p.stderr[-3000:]
    head, last = p.stdout.strip().splitlines()[-2:]
    assert "transformer-engine spec: False" in head and "fp32 (cpu check)" in head
    first, final = map(float, re.search(r"lm loss ([\d.]+) -> ([\d.]+)", head).groups())
    assert final < first  # four steps on one batch
    m = re.fullmatch(r"step ([\d.]+) ms \| tokens/s ([\d,]+) \| model TFLOP/s ([\d.e-]+) \| MFU ([\d.]+)%", last)
    assert m, last
    step_ms, tokens_s, tflops, mfu = float(m[1]), float(m[2].replace(",", "")), float(m[3]), float(m[4])
    assert tokens_s == pytest.approx(2 * 64 / (step_ms / 1000), rel=0.01)
    from megatron_dsm.models.config import preset

    per_token = preset("tiny", vocab_size=512, seq_length=64).train_flops_per_token()
    assert tflops == pytest.approx(tokens_s * per_token / 1e12, rel=0.01)
    assert mfu == pytest.approx(100 * tflops / 0.5, rel=0.01, abs=0.06)


def test_cpu_check_runs_the_tp2_path():
    """TP=2 under torchrun (gloo): a step, a save and a load into a fresh model
    with equal parameters, and 8 mixed-length prompts each generating what
    they generate alone (fp32: the tokens and, to 1e-4, the log-probs)."""
    p = run("tp2", "--cpu-check", "--model", "tiny", "--vocab-size", "512", "--seq-length", "64",
            "--micro-batch-size", "2", "--max-new-tokens", "6", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    check, gen = p.stdout.strip().splitlines()[-2:]
    assert check.startswith("tp2 check: cpu; backend gloo;") and "(parameters equal)" in check, check
    assert "fp32 (cpu check)" in check
    assert "rows equal to single-row generation 8/8" in gen, gen
    worst = float(re.search(r"max \|batch - alone\| log-prob ([\d.e+-]+)", gen)[1])
    assert worst <= 1e-4
