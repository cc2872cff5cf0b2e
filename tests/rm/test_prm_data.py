"""Math-Shepherd step labels on a toy task where the right labels are known,
and the reader for the BiRM step-labelled format."""
import json
import subprocess
import sys

import pytest

from megatron_dsm.rl.prm_labels import read_birm, shepherd_labels
from megatron_dsm.rl.rm_data import RewardDataError
from tests.rm import toy_policy

Q = "Tom has 3 apples, gets 4 more, then 5 more. How many apples?"
GOOD = ["3 + 4 = 7.", "7 + 5 = 12.", "The answer is 12."]
BAD_STEP2 = ["3 + 4 = 7.", "9 + 5 = 14.", "The answer is 14."]      # planted: 9 is not 7
BAD_STEP1 = ["3 + 4 = 8.", "8 + 5 = 13.", "The answer is 13."]      # planted: 3 + 4 = 8
BAD_FINAL = ["3 + 4 = 7.", "7 + 5 = 12.", "The answer is 15."]


@pytest.mark.parametrize("steps,want", [
    (GOOD, [1.0, 1.0, 1.0]),
    (BAD_STEP2, [1.0, 0.0, 0.0]),
    (BAD_STEP1, [0.0, 0.0, 0.0]),
    (BAD_FINAL, [1.0, 1.0, 0.0]),
])
def test_hard_labels_find_the_planted_step(steps, want):
    assert shepherd_labels(Q, steps, "12", toy_policy.complete, n=4, mode="hard") == want


def test_soft_labels_are_the_share_of_completions_that_reach_the_answer():
    # slippy: samples 3 and 7 of 8 add 1 in their continuation -> 6/8 right where a
    # continuation is needed; the last step needs none (the prefix is the solution).
    assert shepherd_labels(Q, GOOD, "12", toy_policy.slippy, n=8, mode="soft") == [0.75, 0.75, 1.0]
    assert shepherd_labels(Q, BAD_STEP2, "12", toy_policy.slippy, n=8, mode="soft") == [0.75, 0.0, 0.0]
    # hard labels from the same policy: any success counts
    assert shepherd_labels(Q, BAD_STEP2, "12", toy_policy.slippy, n=8, mode="hard") == [1.0, 0.0, 0.0]


def test_cli_labels_a_file_with_a_python_policy(tmp_path, repo_root):
    src = tmp_path / "sols.jsonl"
    rows = [{"question": Q, "answer": "12", "solution": "\n\n".join(s)} for s in (GOOD, BAD_STEP2)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "prm.jsonl"
    p = subprocess.run([sys.executable, str(repo_root / "tools" / "build_prm_data.py"), "--input", str(src),
                        "--output", str(out), "--policy", "tests.rm.toy_policy:complete", "--samples", "2"],
                       cwd=repo_root, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(repo_root), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["steps"] for g in got] == [GOOD, BAD_STEP2]
    assert [g["step_labels"] for g in got] == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert "solutions 2 | steps 6" in p.stdout
    # bad input: one line naming file and line
    src.write_text('{"question": "q"}\n')
    p = subprocess.run([sys.executable, str(repo_root / "tools" / "build_prm_data.py"), "--input", str(src),
                        "--output", str(out), "--policy", "tests.rm.toy_policy:complete"],
                       cwd=repo_root, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(repo_root), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "sols.jsonl:1:" in p.stderr, p.stderr


def test_read_birm_shared_files(shared_data):
    d = shared_data / "process_supervision" / "birm"
    for f in sorted(d.glob("*.jsonl")):
        skipped = []
        recs = read_birm(str(f), skipped_out=skipped)
        # 10 problems x 15 solutions; Qwen2.5-7B has outputs labelled "[invalid]"
        assert len(recs) + len(skipped) == 150 and len(skipped) < 5
        for r in recs:
            assert len(r["steps"]) == len(r["step_labels"]) > 0
            assert all("ки" not in s and s == s.strip() and s for s in r["steps"])
            assert set(r["step_labels"]) <= {0.0, 1.0}
        soft = read_birm(str(f), "step_s_label")
        assert all(0.0 <= x <= 1.0 for r in soft for x in r["step_labels"])
    # the first record, checked by hand against the file
    first = read_birm(str(d / "qwen2.5_3b_math_process_examples.jsonl"))[0]
    assert first["steps"][0] == "We can break this function into two cases: $x \\leq -1$ and $x > -1$."
    assert first["step_labels"] == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert first["answer"] == "[-2,2]"


def test_read_birm_step_count_mismatch_is_one_clear_error(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text(json.dumps({"question": "q", "outputs": [{"response": "a ки b ки", "step_labels": [True]}]}) + "\n")
    with pytest.raises(RewardDataError, match=r"b.jsonl:1: outputs\[0\] has 2 steps but step_labels has 1 labels"):
        read_birm(str(f))
