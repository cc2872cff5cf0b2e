"""Pure parts of the RL stage: toy task, rewards, batch layout, iterative-RL
data, data order, config errors."""
import random

import pytest
import torch

from megatron_dsm.config import ConfigError
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.rl.arith_task import generate_problems, step_is_correct
from megatron_dsm.rl.loop import QuestionOrder
from megatron_dsm.rl.iterative import with_replay
from megatron_dsm.rl.rm_sampling import outcome_records
from megatron_dsm.rl.rewards import ArithmeticStepReward, PoTReward, RuleReward, char_to_token_ends
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.rollout import build_batch


def test_toy_task_splits_are_disjoint_and_solutions_are_right():
    train, held = generate_problems(300, 60, seed=1, max_value=10)
    assert len(train) == 300 and len(held) == 60
    assert not {p.question for p in train} & {p.question for p in held}
    for p in train + held:
        assert all(step_is_correct(s) for s in p.steps)
        assert p.solution.endswith(f"The answer is {p.answer}.")
        assert p.answer >= 0


def test_rule_reward_values_and_format_penalty():
    r, ok = RuleReward(1.0, -1.0, format_penalty=0.5)(
        ["q"] * 3, ["3+4=7. The answer is 7.", "3+4=8. The answer is 8.", "no idea"], ["7", "7", "7"])
    assert ok.tolist() == [True, False, False]
    assert r.tolist() == [1.0, -1.0, -1.5]


def test_pot_reward_runs_the_program_in_the_sandbox():
    r, ok = PoTReward()(["q", "q"], ["```python\nprint(3*4)\n```", "print(3+4)"], ["12", "12"])
    assert ok.tolist() == [True, False] and r.tolist() == [1.0, 0.0]


def test_arithmetic_step_rewards_land_on_step_end_tokens():
    tok = build_tokenizer("byte")
    text = " 3+4=7. 7-2=6. The answer is 6."
    ids = tok.encode(text) + [tok.eod]
    sr = ArithmeticStepReward()(["q"], [text], ["5"], [ids], tok.decode)
    assert sr.rewards[0].tolist() == [1.0, 0.0, 0.0]        # right, wrong equation, wrong answer
    ends = [text.index(".") , text.index(".", 8), len(text) - 1]
    assert sr.ends[0].tolist() == ends                      # byte tokens: char index == token index
    assert char_to_token_ends(ids, [1, len(text)], tok.decode) == [0, len(text) - 1]


def test_arithmetic_step_reward_charges_a_missing_answer():
    """Stopping after right equations without stating an answer must not pay:
    one extra wrong step lands on the last token (with the last equation's
    end when the text stops right there), and the process advantage of the
    group ranks the complete right solution above it."""
    import torch

    from megatron_dsm.rl.algorithms import process_advantage

    tok = build_tokenizer("byte")
    texts = [" 3+4=7.", " 3+4=7. 7-2=5. The answer is 5.", " 3+4=7. 7-2=5", ""]
    ids = [tok.encode(t) + [tok.eod] for t in texts]
    sr = ArithmeticStepReward()(["q"] * 4, texts, ["5"] * 4, ids, tok.decode)
    assert sr.rewards.tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert sr.mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert sr.ends[0, :2].tolist() == [len(texts[0]) - 1] * 2     # both end on the final "."
    assert sr.ends[2, :2].tolist() == [6, len(texts[2]) - 1]
    t_len = max(len(i) for i in ids)
    resp = torch.zeros(4, t_len)
    for r, i in enumerate(ids):
        resp[r, :len(i)] = 1.0
    adv, _ = process_advantage(sr.rewards, sr.ends, sr.mask, resp, 4)
    # hand check, group of 4: step rewards [1,0 | 1,1,1 | 1,0 | 0], mean 5/8,
    # so the one-equation completion's first token gets (1-5/8) + (0-5/8) < 0
    assert adv[0, 0] < 0 < adv[1, 0]


def test_build_batch_response_columns():
    b = build_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    assert b.tokens.tolist() == [[5, 6, 7, 9, 10], [8, 11, 12, 13, 0]]
    # log-prob of response token j sits at column len(prompt) - 1 + j of [N, S-1]
    assert b.index[0, :2].tolist() == [2, 3] and b.index[1].tolist() == [0, 1, 2]
    assert b.mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert b.num_tokens == 5


def test_question_order_resumes_exactly():
    a = QuestionOrder(10, seed=4)
    first = a.take(7)
    state = a.state()
    rest = a.take(8)                         # crosses into epoch 1
    b = QuestionOrder(10, seed=4)
    b.load(state)
    assert b.take(8) == rest
    assert sorted(first + rest[:3]) == list(range(10))
    with pytest.raises(ValueError, match="taken over 10 questions, this run has 11"):
        QuestionOrder(11, seed=4).load(state)


def test_iterative_rm_records_and_ten_percent_replay():
    recs = outcome_records([{"question": q, "solution": s, "answer": a} for q, s, a in
                            zip(["q1", "q2", "q3"], ["The answer is 2.", "The answer is 5.", " "], ["2", "4", "1"])])
    assert [r["label"] for r in recs] == [1.0, 0.0]          # empty sample dropped
    history = [{"question": f"old{i}", "solution": "x", "label": 0.0} for i in range(100)]
    new = [{"question": f"new{i}", "solution": "y", "label": 1.0} for i in range(90)]
    mix = with_replay(new, history, 0.1, random.Random(0))
    old = [r for r in mix if r["question"].startswith("old")]
    assert len(mix) == 100 and len(old) == 10
    assert with_replay(new, [], 0.1, random.Random(0)) != [] and len(with_replay(new, [], 0.1, random.Random(0))) == 90


@pytest.mark.parametrize("kw,msg", [
    (dict(group_size=1), "group_size >= 2"),
    (dict(supervision="process"), "step rewards"),
    (dict(reward="orm"), "--reward-model"),
    (dict(temperature=0.0), "temperature"),
    (dict(rm_update_iters=5), "--reward orm"),
])
def test_config_errors_are_one_line(kw, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        RLConfig(**kw)
    assert "\n" not in str(e.value)


def test_sft_rows_mix_direct_answers_and_mask_only_the_response():
    from megatron_dsm.rl.toy import sft_batch, sft_rows

    tok = build_tokenizer("byte")
    probs, _ = generate_problems(400, 10, seed=2, max_value=10)
    rows = sft_rows(probs, tok, direct_share=0.25, seed=0)
    texts = [tok.decode(ids[plen:-1]) for ids, plen in rows]
    direct = sum(t.startswith(" The answer is") for t in texts)
    assert 70 <= direct <= 130                     # ~25% of 400
    assert all(ids[-1] == tok.eod for ids, _ in rows)
    b = sft_batch(rows[:2], pad_id=0)
    ids, plen = rows[0]
    assert b["loss_mask"][0].sum() == len(ids) - plen  # response tokens and eod only
    assert b["labels"][0, plen - 1] == ids[plen]
    with pytest.raises(ValueError, match="direct_share"):
        sft_rows(probs, tok, direct_share=1.5)
