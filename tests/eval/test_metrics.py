import json
from fractions import Fraction

import pytest

from megatron_dsm.eval.metrics import (exact_fail_prob, format_table, maj_at_k, majority_vote, pass_at_k,
                                       plot_k_curves, summarize, write_json)


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 2, 1 - 3 / 10),           # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),        # 1 - C(7,5)/C(10,5) = 11/12
    (4, 0, 2, 0.0),
    (4, 4, 1, 1.0),
    (3, 1, 3, 1.0),                  # n - c < k
    (8, 3, 1, 3 / 8),                # pass@1 = c/n
    (64, 1, 8, 8 / 64),              # one correct: k/n
    (6, 2, 3, 1 - 4 / 20),           # 1 - C(4,3)/C(6,3)
])
def test_pass_at_k_exact(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_exact_fraction():
    assert exact_fail_prob(10, 3, 5) == Fraction(1, 12)


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_majority_vote_and_ties():
    assert majority_vote(["3", "4", "4"]) == "4"
    # tie 2-2: the answer seen first wins, whatever the order of later votes
    assert majority_vote(["5", "7", "7", "5"]) == "5"
    assert majority_vote(["7", "5", "5", "7"]) == "7"
    # None never wins
    assert majority_vote([None, None, "2"]) == "2"
    assert majority_vote([None, None]) is None
    # equivalence grouping: 0.5 and \frac{1}{2} vote together
    same = lambda a, b: {a, b} <= {"0.5", r"\frac{1}{2}"}
    assert majority_vote(["3", r"\frac{1}{2}", "0.5", "3", "0.5"], same) == r"\frac{1}{2}"


def test_maj_at_k():
    answers = ["1", "2", "2", "1", "1"]
    correct = [True, False, False, True, True]
    assert maj_at_k(answers, correct, 1) is True
    assert maj_at_k(answers, correct, 3) is False       # "2" wins 2-1
    assert maj_at_k(answers, correct, 4) is True        # 2-2 tie: "1" came first
    assert maj_at_k(answers, correct, 5) is True
    with pytest.raises(ValueError):
        maj_at_k(answers, correct, 6)


def test_summarize_table_json_plot(tmp_path):
    recs = [
        {"benchmark": "math", "subject": "Algebra", "level": 1, "answers": ["1", "1", "2", "2"],
         "correct": [True, True, False, False]},
        {"benchmark": "math", "subject": "Geometry", "level": 2, "answers": ["3", "4", "4", "4"],
         "correct": [False, True, True, True]},
        {"benchmark": "gsm8k", "answers": ["5", "6", "6", "6"], "correct": [False, False, False, False]},
    ]
    s = summarize(recs)
    assert s["math"]["accuracy"] == 0.5
    assert s["math"]["pass@k"]["1"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert s["math"]["pass@k"]["2"] == pytest.approx(((1 - 1 / 6) + 1.0) / 2)
    assert s["math"]["maj@k"]["4"] == pytest.approx(1.0)     # tie 2-2 -> "1" (correct); "4" 3-1
    assert s["math"]["by_subject"]["Geometry"]["accuracy"] == 0.0
    assert s["math"]["by_level"]["1"]["maj@k"]["2"] == 1.0
    assert s["gsm8k"]["pass@k"]["4"] == 0.0
    table = format_table(s)
    assert "subject=Algebra" in table and "gsm8k" in table
    write_json(s, str(tmp_path / "m.json"))
    assert json.loads((tmp_path / "m.json").read_text())["gsm8k"]["count"] == 1
    plot_k_curves(s, str(tmp_path / "k.png"))
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
