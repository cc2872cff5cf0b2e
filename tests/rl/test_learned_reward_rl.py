"""GRPO with learned reward models under torchrun (gloo, 2 processes), at
TP=2 and at DP=2 (tests/rl/rm_rl_worker.py): GRPO+OS scored by a trained
outcome RM, GRPO+PS scored by a trained process RM, and one round of
iterative RL (the RM trained on the policy's new samples with replay at its
own learning rate, the reference reset); each runs several steps and resumes
from a checkpoint taken between steps to the very same weights (policy,
reference, reward model and its optimizer) and log lines."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "rl" / "rm_rl_worker.py"
sys.path.insert(0, str(REPO / "tests" / "training"))
from launch import free_port  # noqa: E402

LAYOUTS = {"tp2": (["--tp", "2"], "outcome"), "dp2": ([], "process")}
SAME = ("reward mean", "accuracy", "policy loss", "kl", "grad norm", "response length")


def _launch(tmp_path, args: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(WORKER),
                        "--work", str(tmp_path / "w"), "--out", str(out), *args],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, start_new_session=True)
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def result(request, tmp_path_factory):
    args, kind = LAYOUTS[request.param]
    return request.param, kind, _launch(tmp_path_factory.mktemp(request.param),
                                        args + ["--iterative-kind", kind])


def _check_resumes(res: dict, ranks: list, name: str, last: int) -> None:
    full = {x["iteration"]: x for x in res["lines"]}
    for it, r in res["resumes"].items():
        for rank in ranks:
            eq = rank[name]["resumes"][it]
            assert eq and all(eq.values()), (name, it, eq)      # policy, reference, RM: same weights
        again = {x["iteration"]: x for x in r["lines"]}
        assert sorted(again) == list(range(int(it) + 1, last + 1)), (name, it, sorted(again))
        for k, line in again.items():
            for f in SAME:
                assert line[f] == full[k][f], (name, it, k, f)


@pytest.mark.multiproc
def test_grpo_os_with_a_trained_orm_resumes_exactly(result):
    layout, _, d = result
    res = d["os"]
    assert [x["iteration"] for x in res["lines"]] == [1, 2, 3]
    assert all(0.0 < x["reward mean"] < 1.0 for x in res["lines"])    # ORM probabilities
    _check_resumes(res, d["ranks"], "os", 3)


@pytest.mark.multiproc
def test_grpo_ps_with_a_trained_prm_resumes_exactly(result):
    layout, _, d = result
    res = d["ps"]
    assert [x["iteration"] for x in res["lines"]] == [1, 2, 3]
    _check_resumes(res, d["ranks"], "ps", 3)


@pytest.mark.multiproc
def test_one_iterative_round_refreshes_the_rm_and_resumes_exactly(result):
    layout, kind, d = result
    res = d["iter"]
    # one RL iteration boundary: one RM refresh, then the reference reset
    assert res["refreshes"] == 1 and res["resets"] == 1 and res["rl_iteration"] == 1
    assert res["rm_iteration"] == 2 and res["rm_moved"]               # 2 RM steps, the weights moved
    assert res["history"] > 0
    text = res["text"]
    refresh = text.index(" iterative RL: reward model refresh 1")
    assert refresh < text.index(" RL iteration 1 begins at step 2: reference <- policy")
    line = text[refresh:].splitlines()[0]
    print(f"\n{layout} ({kind} RM): {line.strip()}")
    assert f"({kind})" in line and "replayed records" in line and "lr 5.000E-04" in line   # the RM's own lr
    assert [x["iteration"] for x in res["lines"]] == [1, 2, 3, 4]
    # resumed at the boundary (before the refresh) and after it: same end
    assert sorted(res["resumes"]) == ["2", "3"]
    _check_resumes(res, d["ranks"], "iter", 4)
    assert res["resumes"]["2"]["refreshes"] == 1 and res["resumes"]["3"]["refreshes"] == 1
