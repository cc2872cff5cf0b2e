"""GRPO through the real loop (Trainer, megatron-core GPTModel, the shared
sampler) on the generated arithmetic task: log-line fields, zero-spread
groups give no policy gradient, resume restores RL state, the reference is
reset to the policy at RL-iteration boundaries.

Log-probs at TP=2 vs TP=1 are covered by tests/models/test_generation.py
(test_tp2_equals_tp1), which exercises the same ``token_logprobs`` this loop
trains through."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "rl" / "grpo_worker.py"

GRPO_FIELDS = ["consumed samples", "elapsed time per iteration (ms)", "learning rate",
               "reward mean", "reward std", "accuracy", "kl", "clip fraction", "entropy",
               "response length", "zero-spread fraction", "rollout tokens per second",
               "train tokens per second", "grad norm", "policy loss", "rl iteration"]


def _run(scenario, tmp_path):
    out = tmp_path / "out.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, str(WORKER), scenario, "--work", str(tmp_path / "w"),
                        "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def run_resume(tmp_path_factory):
    return _run("run_resume", tmp_path_factory.mktemp("grpo"))


def test_metrics_line_has_every_grpo_field(run_resume):
    lines = run_resume["run"]["lines"]
    assert [l["iteration"] for l in lines] == [1, 2, 3]
    for l in lines:
        for f in GRPO_FIELDS:
            assert f in l, (f, l)
        assert 0.0 <= l["accuracy"] <= 1.0
        assert 0.0 <= l["zero-spread fraction"] <= 1.0
        assert 0.0 <= l["clip fraction"] <= 1.0
        assert l["kl"] >= 0.0
        assert 0 < l["response length"] <= 12
        assert l["consumed samples"] == 16 * l["iteration"]
    assert run_resume["run"]["tb_files"], "no TensorBoard event file written"


def test_reference_reset_at_iteration_boundary(run_resume):
    r = run_resume["run"]
    # pi_ref starts as the initial policy, stays frozen for RL iteration 0 ...
    assert r["ref_init_equals_policy_init"]
    assert r["boundary_step"] == 2
    assert r["ref_before_reset_equals_init"]
    # ... and is set to the policy when the next RL iteration begins
    assert r["ref_after_reset_equals_boundary_policy"]
    assert r["policy_moved_since_boundary"]
    assert r["resets"] == 1 and r["rl_iteration"] == 1


def test_resume_restores_rl_iteration_data_position_and_reference(run_resume):
    run, res = run_resume["run"], run_resume["resume"]
    assert res["iteration"] == 3
    assert res["rl_iteration"] == run["rl_iteration"] == 1
    assert res["order"] == run["order"]
    # the resumed run continues with exactly the questions the original would take next
    assert res["next_questions"] == run["next_questions"]
    assert res["ref_checksum"] == pytest.approx(run["ref_checksum"], rel=0, abs=0)
    assert res["policy_checksum"] == pytest.approx(run["policy_checksum"], rel=1e-12)
    # the frozen reference is written into the checkpoint before it is published
    assert "rl_reference" in res["published_files"]
    assert res["missing_reference_error"].endswith(
        "rl_reference is missing: the checkpoint has no frozen reference model")


def test_zero_spread_groups_give_no_policy_gradient(tmp_path):
    d = _run("zero_spread", tmp_path)
    m = d["metrics"]
    assert m["zero-spread fraction"] == 1.0
    assert m["reward std"] == 0.0
    assert m["grad norm"] == 0.0
    assert d["params_unchanged"]
    # control: the same step with a spread of rewards does update the policy
    assert d["spread_metrics"]["zero-spread fraction"] < 1.0
    assert d["spread_metrics"]["grad norm"] > 0.0
    assert d["spread_params_changed"]
    # sampled held-out accuracy: a mean over 5 questions x 4 samples, reproducible
    a, b = d["sampled_eval"]
    assert a == b and 0.0 <= a <= 1.0 and abs(a * 20 - round(a * 20)) < 1e-9
    assert "n=1" in d["greedy_n_error"]


@pytest.mark.multiproc
@pytest.mark.parametrize("layout", [["--tensor-model-parallel-size", "2"], []], ids=["tp2", "dp2"])
def test_grpo_command_under_torchrun(tmp_path, layout):
    """tools/grpo.py on 2 gloo processes (TP=2, or DP=2): runs, logs, saves."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), str(REPO / "tools" / "grpo.py"),
           "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
           "--ffn-hidden-size", "128", "--seq-length", "160", "--vocab-size", "259",
           "--micro-batch-size", "8", "--global-batch-size", "16", "--prompts-per-step", "4",
           "--group-size", "4", "--max-new-tokens", "8", "--train-iters", "2", "--log-interval", "1",
           "--task-train-size", "20", "--task-heldout-size", "4", "--rl-eval-size", "4",
           "--save", str(tmp_path / "ck"), *layout]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    from megatron_dsm.training.logging import parse_line

    lines = [l for l in map(parse_line, p.stdout.splitlines()) if l]
    assert [l["iteration"] for l in lines] == [1, 2]
    assert all(l["consumed samples"] == 16 * l["iteration"] for l in lines)
    assert (tmp_path / "ck" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"


def test_bad_option_is_one_error_line(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "tools" / "grpo.py"), "--prompts-per-step", "4",
                        "--group-size", "4", "--global-batch-size", "8", "--vocab-size", "259"],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert p.returncode == 2
    err = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert err == ["error: global batch size 8 must equal B x G = 4 x 4 = 16 (responses per step)"]


@pytest.mark.multiproc
def test_reference_saved_at_tp2_loads_at_tp1(tmp_path):
    """The frozen reference is one dist checkpoint: saved at TP=2 it loads
    at TP=1 and gives the same log-probs; saved at DP=2 it is written once
    (about one copy of the weights, not one per replica)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    worker = str(REPO / "tests" / "rl" / "reference_worker.py")
    for cmd in ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                 "--master-addr", "127.0.0.1", "--master-port", str(port), worker, "save"],
                [sys.executable, worker, "load"]):
        p = subprocess.run(cmd + [str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600, start_new_session=True)
        assert p.returncode == 0, p.stderr[-4000:]
    import torch

    got = torch.load(tmp_path / "load.pt")
    for name in ("tp2", "dp2"):
        saved = torch.load(tmp_path / f"{name}.pt")
        assert (got[name] - saved).abs().max().item() <= 1e-5, name
        assert (got[f"{name}_before"] - saved).abs().max().item() > 0.1     # the load did it
        assert not (tmp_path / name / "rank_1.pt").exists()
    written = sum(f.stat().st_size for f in (tmp_path / "dp2").glob("*.distcp"))
    assert got["param_bytes"] <= written < 1.3 * got["param_bytes"]
