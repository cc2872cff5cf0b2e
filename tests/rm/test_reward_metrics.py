"""Reward-model metrics against values worked out by hand."""
import pytest

from megatron_dsm.rl import reward_metrics as rm


def test_auc_by_hand_with_a_tie():
    # scores 0.1 0.4 0.35 0.8 0.4 ; labels 0 0 1 1 1
    # positive/negative pairs (3 x 2 = 6):
    #   0.35 vs 0.1 win, 0.35 vs 0.4 loss, 0.8 vs both win, 0.4 vs 0.1 win, 0.4 vs 0.4 tie (1/2)
    #   wins = 1 + 0 + 2 + 1 + 0.5 = 4.5  -> AUC = 4.5 / 6 = 0.75
    scores = [0.1, 0.4, 0.35, 0.8, 0.4]
    labels = [0, 0, 1, 1, 1]
    assert rm.auc(scores, labels) == pytest.approx(0.75, abs=1e-12)
    # ranks: 0.1->1, 0.35->2, 0.4,0.4->3.5, 0.8->5
    assert rm.average_ranks(__import__("numpy").array(scores)).tolist() == [1.0, 3.5, 2.0, 5.0, 3.5]


def test_auc_extremes_and_errors():
    assert rm.auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert rm.auc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
    assert rm.auc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        rm.auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        rm.auc([0.1, 0.2], [1, 0, 1])


def test_accuracy_by_hand():
    # thresholded at 0.5: 1 0 1 0 vs labels 1 0 0 0 -> 3 of 4
    assert rm.accuracy([0.9, 0.2, 0.5, 0.49], [1, 0, 0, 0]) == 0.75
    # soft labels count as positive from 0.5
    assert rm.accuracy([0.9, 0.1], [0.75, 0.25]) == 1.0


def test_best_of_n_against_majority_and_random():
    groups = [
        # RM picks the lone correct one; majority picks the wrong "5"
        {"scores": [0.2, 0.9, 0.1, 0.3], "correct": [False, True, False, False], "answers": ["5", "7", "5", "5"]},
        # RM picks a wrong one; majority right
        {"scores": [0.9, 0.1, 0.2], "correct": [False, True, True], "answers": ["3", "4", "4"]},
        # all right
        {"scores": [0.5, 0.5], "correct": [True, True], "answers": ["1", "1"]},
    ]
    r = rm.best_of_n(groups)
    assert r["best_of_n"] == pytest.approx(2 / 3)
    assert r["majority"] == pytest.approx(2 / 3)
    # expected random choice: (1/4 + 2/3 + 1) / 3
    assert r["random"] == pytest.approx((0.25 + 2 / 3 + 1.0) / 3)
    assert r["pass_at_n"] == 1.0 and r["questions"] == 3
    with pytest.raises(ValueError, match="same non-zero length"):
        rm.best_of_n([{"scores": [1.0], "correct": [True, False]}])
