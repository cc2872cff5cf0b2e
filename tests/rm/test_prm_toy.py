"""The generated step set that tells a step-judging PRM from a position-only
scorer (rl/prm_toy.py): labels, truncation and the baseline, by hand."""

import random

import pytest

from megatron_dsm.rl import prm_toy, reward_metrics
from megatron_dsm.rl.arith_task import Problem, generate_problems

# "Mia has 3 apples and gives away 2 and then gets 8 more."
MIA = Problem("Mia has 3 apples and gives away 2 and then gets 8 more. How many apples does Mia have?", 9,
              "3-2=1. 1+8=9. The answer is 9.", ("3-2=1.", "1+8=9."))


def test_steps_of_a_worked_solution():
    assert prm_toy.solution_steps(MIA) == ["3-2=1", "1+8=9", "The answer is 9."]


@pytest.mark.parametrize("labelling,labels", [("local", [1.0, 0.0, 1.0]), ("propagated", [1.0, 0.0, 0.0]),
                                              ("first_error", [1.0, 0.0])])
def test_one_wrong_step_and_its_labels(labelling, labels):
    steps, got = prm_toy.corrupt(MIA, 1, random.Random(0), labelling)
    assert got == labels and len(steps) == len(labels)
    assert steps[0] == "3-2=1" and steps[1] != "1+8=9"
    if labelling != "first_error":
        # the answer goes on from the wrong step's value: right given the text before it
        wrong_value = steps[1].split("=")[1]
        assert steps[2] == f"The answer is {wrong_value}."


def test_first_error_keeps_the_prefix_of_the_other_labellings():
    for at in range(3):
        a, _ = prm_toy.corrupt(MIA, at, random.Random(at), "local")
        b, labels = prm_toy.corrupt(MIA, at, random.Random(at), "first_error")
        assert b == a[:at + 1] and labels == [1.0] * at + [0.0]


def test_bad_labelling_and_step_are_refused():
    with pytest.raises(ValueError, match="labelling"):
        prm_toy.corrupt(MIA, 0, random.Random(0), "soft")
    with pytest.raises(ValueError, match="outside"):
        prm_toy.corrupt(MIA, 3, random.Random(0), "local")


def test_wrong_steps_fall_equally_on_every_position():
    probs, _ = generate_problems(3000, 10, seed=3, max_value=9, two_step_prob=1.0)
    rows = prm_toy.step_set(probs, seed=5, labelling="first_error", clean_share=0.0)
    counts = [sum(r["wrong_step"] == k for r in rows) for k in range(3)]
    assert min(counts) > 900 and max(counts) < 1100
    assert all(r["step_labels"][-1] == 0.0 and len(r["steps"]) == r["wrong_step"] + 1 for r in rows)


def test_position_baseline_by_hand():
    train = [{"steps": ["a", "b"], "step_labels": [1.0, 0.0]},
             {"steps": ["a", "b", "c"], "step_labels": [1.0, 1.0, 0.0]},
             {"steps": ["a"], "step_labels": [0.0]}]
    model = prm_toy.position_baseline(train)
    assert model == {0: pytest.approx(2 / 3), 1: 0.5, 2: 0.0}
    held = [{"steps": ["x", "y", "z", "w"], "step_labels": [1, 1, 0, 1]}]
    overall = (2 / 3 + 0.5 + 0.0) / 3
    assert prm_toy.position_scores(model, held) == pytest.approx([2 / 3, 0.5, 0.0, overall])
    assert prm_toy.step_labels(held) == [1.0, 1.0, 0.0, 1.0]


def test_a_step_checker_beats_position_on_the_first_error_set():
    """A scorer that checks each equation (what a PRM must learn) separates
    the steps; one that knows only positions cannot beat chance by much."""
    probs, _ = generate_problems(600, 10, seed=4, max_value=9, two_step_prob=1.0)
    train = prm_toy.step_set(probs[:300], seed=1, labelling="propagated")
    held = prm_toy.step_set(probs[300:], seed=2, labelling="first_error")
    labels = prm_toy.step_labels(held)

    def check(question, steps):
        value = int(question.split(" has ")[1].split()[0])
        out = []
        for s in steps:
            if s.startswith("The answer is"):
                out.append(float(s == f"The answer is {value}."))
                continue
            lhs, rhs = s.split("=")
            op = "+" if "+" in lhs else "-"
            a, b = (int(x) for x in lhs.split(op))
            ok = a == value and (a + b if op == "+" else a - b) == int(rhs)
            out.append(float(ok))
            value = int(rhs)
        return out

    checker = [x for r in held for x in check(r["question"], r["steps"])]
    assert reward_metrics.auc(checker, labels) == 1.0
    position = reward_metrics.auc(prm_toy.position_scores(prm_toy.position_baseline(train), held), labels)
    assert position < 0.75


def test_auc_by_position_by_hand():
    recs = [{"steps": ["a", "b"], "step_labels": [1.0, 0.0]},
            {"steps": ["a", "b", "c"], "step_labels": [0.0, 1.0, 0.0]},
            {"steps": ["a"], "step_labels": [1.0]}]
    # position 0: scores 0.9 (good), 0.2 (bad), 0.1 (good) -> 1 of 2 good-bad pairs ordered
    # position 1: 0.3 (bad), 0.8 (good) -> 1.0; position 2 holds one label only
    got = prm_toy.auc_by_position([0.9, 0.3, 0.2, 0.8, 0.5, 0.1], recs)
    assert got == {0: (0.5, 3, 1), 1: (1.0, 2, 1)}
    position_only = prm_toy.position_scores(prm_toy.position_baseline(recs), recs)
    assert all(a == 0.5 for a, _, _ in prm_toy.auc_by_position(position_only, recs).values())
    with pytest.raises(ValueError, match="5 scores for 6 steps"):
        prm_toy.auc_by_position([0.1] * 5, recs)
