"""Every formula of megatron_dsm/rl/algorithms.py against hand arithmetic."""

import math

import pytest
import torch

from megatron_dsm.rl import algorithms as alg


def close(a, b, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float32),
                               torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=tol)


# --------------------------------------------------------------------------- masked utils


def test_masked_mean_sum_var_whiten():
    v = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # sum = 1+2+3+4+5 = 15 over 5 tokens -> mean 3
    close(alg.masked_sum(v, m), 15.0)
    close(alg.masked_mean(v, m), 3.0)
    # per row: (1+2)/2 = 1.5, (3+4+5)/3 = 4
    close(alg.masked_mean(v, m, dim=-1), [1.5, 4.0])
    # deviations -2,-1,0,1,2 -> squares sum 10; unbiased 10/4 = 2.5; biased 10/5 = 2
    close(alg.masked_var(v, m), 2.5)
    close(alg.masked_var(v, m, unbiased=False), 2.0)
    w = alg.masked_whiten(v, m, eps=0.0)
    s = math.sqrt(2.5)
    close(w, [[-2 / s, -1 / s, 0.0], [0.0, 1 / s, 2 / s]])
    # shift_mean=False keeps the mean: (v - 3)/s + 3
    w2 = alg.masked_whiten(v, m, shift_mean=False, eps=0.0)
    close(w2[0, 0], -2 / s + 3)


def test_masked_mean_empty_mask_is_zero_not_nan():
    v = torch.tensor([[1.0, 2.0]])
    out = alg.masked_mean(v, torch.zeros_like(v))
    assert out.item() == 0.0


def test_masked_shape_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match="values has shape"):
        alg.masked_mean(torch.ones(2, 3), torch.ones(2, 2))


# --------------------------------------------------------------------------- outcome advantage


def test_outcome_advantage_hand_values():
    # group 0: r = [1, 0, 0, 1]; mean 0.5; unbiased std = sqrt(4*0.25/3) = sqrt(1/3) = 0.577350
    #   A = +-0.5 / 0.577350 = +-0.866025
    # group 1: r = [2, 0, 0, 0]; mean 0.5; deviations 1.5,-0.5,-0.5,-0.5; sq sum 3.0; var 1; std 1
    #   A = [1.5, -0.5, -0.5, -0.5]
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0])
    adv, st = alg.outcome_advantage(r, group_size=4, eps=0.0)
    a = 0.5 / math.sqrt(1 / 3)
    close(adv, [a, -a, -a, a, 1.5, -0.5, -0.5, -0.5])
    close(st.group_mean, [0.5, 0.5])
    close(st.group_std, [math.sqrt(1 / 3), 1.0])
    assert st.num_zero_spread == 0


def test_outcome_advantage_eps_and_biased_std():
    # r = [1, 0]: mean .5, biased std .5 -> A = +-0.5/(0.5+0.5) = +-0.5 with eps = 0.5
    adv, _ = alg.outcome_advantage(torch.tensor([1.0, 0.0]), 2, eps=0.5, unbiased_std=False)
    close(adv, [0.5, -0.5])


def test_dr_grpo_advantage_has_no_std_scaling():
    # r = [2, 0, 0, 0] -> mean 0.5 -> A = r - 0.5
    adv, _ = alg.outcome_advantage(torch.tensor([2.0, 0.0, 0.0, 0.0]), 4, scale_by_std=False)
    close(adv, [1.5, -0.5, -0.5, -0.5])


def test_zero_spread_groups_counted_zero_advantage_no_nan_no_gradient():
    # groups: [1,1,1] (all right), [0,1,0], [0,0,0] (all wrong)
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    adv, st = alg.outcome_advantage(r, group_size=3)
    assert not torch.isnan(adv).any()
    assert st.num_zero_spread == 2
    assert st.zero_spread.tolist() == [True, False, True]
    close(st.zero_spread_fraction, 2 / 3)
    assert adv[:3].eq(0).all() and adv[6:].eq(0).all()
    # same with eps = 0 (0/0 would be NaN without the explicit handling)
    adv0, _ = alg.outcome_advantage(r, group_size=3, eps=0.0)
    assert not torch.isnan(adv0).any() and adv0[:3].eq(0).all()

    # autograd: the policy gradient reaching zero-spread responses is exactly 0
    torch.manual_seed(0)
    logits = torch.randn(9, 5, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (9, 5))
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    mask = torch.ones(9, 5)
    out = alg.grpo_loss(logp, logp.detach(), None, adv0[:, None].expand(9, 5), mask, beta=0.0)
    out.loss.backward()
    g = logits.grad
    assert g[:3].abs().max().item() == 0.0
    assert g[6:].abs().max().item() == 0.0
    assert g[3:6].abs().max().item() > 1e-4


def test_dynamic_sampling_mask():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert alg.zero_spread_groups(r, 2).tolist() == [True, False, True]
    assert alg.dynamic_sampling_keep_mask(r, 2).tolist() == [False, False, True, True, False, False]


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="not a multiple of group_size 4"):
        alg.outcome_advantage(torch.ones(6), 4)


# --------------------------------------------------------------------------- process advantage


def test_process_advantage_two_outputs_three_steps():
    # o1 step rewards [1, 0, 1] ending at tokens 1, 3, 5 (6 response tokens)
    # o2 step rewards [0, 1, 0] ending at tokens 0, 2, 4 (5 response tokens; token 5 is padding)
    # all six rewards together: mean 0.5; deviations +-0.5; unbiased var = 6*0.25/5 = 0.3
    #   a = 0.5 / sqrt(0.3) = 0.912871; normalised o1 = [a, -a, a], o2 = [-a, a, -a]
    # o1: tokens 0,1 -> a - a + a = a ; tokens 2,3 -> -a + a = 0 ; tokens 4,5 -> a
    # o2: token 0 -> -a + a - a = -a ; tokens 1,2 -> a - a = 0 ; tokens 3,4 -> -a ; token 5 -> 0
    sr = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    ends = torch.tensor([[1, 3, 5], [0, 2, 4]])
    smask = torch.ones(2, 3)
    rmask = torch.tensor([[1.0] * 6, [1.0] * 5 + [0.0]])
    adv, st = alg.process_advantage(sr, ends, smask, rmask, group_size=2, eps=0.0)
    a = 0.5 / math.sqrt(0.3)
    close(adv, [[a, a, 0, 0, a, a], [-a, 0, 0, -a, -a, 0]])
    assert st.num_zero_spread == 0
    close(st.group_std, [math.sqrt(0.3)])


def test_process_advantage_padded_steps_and_tokens_after_last_step():
    # one group of 2: o1 has 2 real steps [2, 0] ending at 0 and 1 (third step padding);
    # o2 has 1 step [1] ending at 2.  Rewards 2, 0, 1: mean 1, dev 1,-1,0, unbiased var 1.
    # Dr.-style check with scale_by_std=False too: same numbers since std = 1.
    # o1: token0 -> 1 + (-1) = 0 ; token1 -> -1 ; token2,3 -> 0 (after last step)
    # o2: tokens 0..2 -> 0 ; token 3 -> 0
    sr = torch.tensor([[2.0, 0.0, 99.0], [1.0, 99.0, 99.0]])
    ends = torch.tensor([[0, 1, 0], [2, 0, 0]])
    smask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    rmask = torch.ones(2, 4)
    for scale in (True, False):
        adv, _ = alg.process_advantage(sr, ends, smask, rmask, 2, eps=0.0, scale_by_std=scale)
        close(adv, [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_process_advantage_zero_spread_and_bad_end():
    sr = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    ends = torch.tensor([[0, 1], [0, 1]])
    adv, st = alg.process_advantage(sr, ends, torch.ones(2, 2), torch.ones(2, 2), 2, eps=0.0)
    assert st.num_zero_spread == 1 and not torch.isnan(adv).any() and adv.eq(0).all()
    with pytest.raises(ValueError, match=r"step_ends\[1, 1\] = 5 is outside the response"):
        alg.process_advantage(sr, torch.tensor([[0, 1], [0, 5]]), torch.ones(2, 2),
                              torch.ones(2, 2), 2)


# --------------------------------------------------------------------------- KL, entropy


def test_kl_estimators_hand_values():
    # logp = log 0.5, ref_logp = log 0.25: ref/pi = 0.5
    # k3 = 0.5 - log 0.5 - 1 = 0.5 + 0.693147 - 1 = 0.193147
    # k1 = log 0.5 - log 0.25 = log 2 = 0.693147 ; k2 = 0.5 * 0.693147^2 = 0.240227
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    close(alg.kl_penalty(lp, ref, "k3"), [0.5 - math.log(0.5) - 1])
    close(alg.kl_penalty(lp, ref, "k3"), [0.193147], tol=1e-5)
    close(alg.kl_penalty(lp, ref, "k1"), [math.log(2)])
    close(alg.kl_penalty(lp, ref, "k2"), [0.5 * math.log(2) ** 2])
    # equal policies: all estimators 0; k3 >= 0 for the reverse ratio too:
    # ref/pi = 2: k3 = 2 - log 2 - 1 = 0.306853
    close(alg.kl_penalty(ref, lp, "k3"), [2 - math.log(2) - 1])
    assert alg.kl_penalty(lp, lp, "k3").item() == 0.0
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        alg.kl_penalty(lp, ref, "k4")


def test_k3_is_finite_for_collapsed_probabilities():
    out = alg.kl_penalty(torch.tensor([-200.0]), torch.tensor([0.0]), "k3")
    assert torch.isfinite(out).all()


def test_entropy_from_logits():
    # uniform over 4: log 4 = 1.386294 ; one-hot-ish [0, -inf-ish] -> ~0
    close(alg.entropy_from_logits(torch.zeros(1, 4)), [math.log(4)])
    # p = [0.5, 0.25, 0.25] from logits log p: H = 0.5 log2 + 2 * 0.25 log4 = 1.5 log 2 = 1.039721
    z = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    close(alg.entropy_from_logits(z), [1.5 * math.log(2)])


# --------------------------------------------------------------------------- surrogate and aggregation


def test_clipped_surrogate_and_clip_fraction_asymmetric():
    # ratios via logp - old = log(ratio); eps_low 0.2, eps_high 0.28 (DAPO clip-higher)
    # token: ratio, A   -> loss = -min(ratio*A, clip(ratio)*A), clipped?
    # 1.5, +1 -> -min(1.5, 1.28) = -1.28        clipped
    # 1.1, +1 -> -1.1                           not clipped
    # 0.5, +1 -> -min(0.5, 0.8) = -0.5          not clipped (min keeps the pessimistic one)
    # 0.5, -1 -> -min(-0.5, -0.8) = 0.8         clipped
    # 1.5, -1 -> -min(-1.5, -1.28) = 1.5        not clipped
    # 1.25,+2 -> -min(2.5, 2.5) = -2.5          not clipped (inside the high range)
    ratio = torch.tensor([[1.5, 1.1, 0.5, 0.5, 1.5, 1.25]])
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, 2.0]])
    old = torch.zeros_like(ratio)
    loss_mat, clipped = alg.clipped_surrogate(torch.log(ratio), old, adv, 0.2, 0.28)
    close(loss_mat, [[-1.28, -1.1, -0.5, 0.8, 1.5, -2.5]], tol=1e-5)
    assert clipped.tolist() == [[True, False, False, True, False, False]]
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, frac = alg.policy_loss(torch.log(ratio), old, adv, mask, 0.2, 0.28, agg_mode="token-mean")
    # (-1.28 - 1.1 - 0.5 + 0.8 + 1.5) / 5 = -0.58 / 5 = -0.116 ; clip fraction 2/5
    close(loss, -0.116, tol=1e-5)
    close(frac, 0.4)
    # symmetric eps 0.2: 1.25 with A=2 is now clipped: -min(2.5, 2.4) = -2.4
    lm, cl = alg.clipped_surrogate(torch.log(ratio), old, adv, 0.2)
    close(lm[0, 5], -2.4, tol=1e-5)
    assert cl[0, 5]


def test_clipped_gradient_is_zero_where_clipped():
    lp = torch.log(torch.tensor([1.5, 1.1])).requires_grad_(True)
    loss_mat, _ = alg.clipped_surrogate(lp, torch.zeros(2), torch.ones(2), 0.2)
    loss_mat.sum().backward()
    # d(-ratio)/dlogp = -ratio = -1.1 for the unclipped token; 0 for the clipped one
    close(lp.grad, [0.0, -1.1])


def test_aggregation_modes_hand_values():
    # seq 0: losses [1, 2, 3] all real ; seq 1: [4, 10, 10] with one real token
    l = torch.tensor([[1.0, 2.0, 3.0], [4.0, 10.0, 10.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # seq-mean-token-mean: ((1+2+3)/3 + 4/1) / 2 = (2 + 4)/2 = 3
    close(alg.aggregate_loss(l, m, "seq-mean-token-mean"), 3.0)
    # token-mean: (1+2+3+4)/4 = 2.5
    close(alg.aggregate_loss(l, m, "token-mean"), 2.5)
    # seq-mean-token-sum-norm (L = T = 3): (6/3 + 4/3)/2 = 10/6 = 1.666667
    close(alg.aggregate_loss(l, m, "seq-mean-token-sum-norm"), 10 / 6)
    # with L = 10: (0.6 + 0.4)/2 = 0.5
    close(alg.aggregate_loss(l, m, "seq-mean-token-sum-norm", max_length=10), 0.5)
    # a sequence with no real token is left out of the paper's mean: (2)/1
    m2 = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    close(alg.aggregate_loss(l, m2, "seq-mean-token-mean"), 2.0)
    with pytest.raises(ValueError, match="unknown loss aggregation mode 'sum'"):
        alg.aggregate_loss(l, m, "sum")


def test_grpo_loss_combines_surrogate_and_k3():
    # one sequence, two tokens, ratio 1 (on-policy), A = [1, 1]
    # logp = log .5, ref = log .25 -> k3 = 0.193147 per token ; beta = 0.04
    # per-token loss = -1 + 0.04 * 0.193147 = -0.99227412 ; mean over tokens = same
    lp = torch.full((1, 2), math.log(0.5))
    ref = torch.full((1, 2), math.log(0.25))
    out = alg.grpo_loss(lp, lp, ref, torch.ones(1, 2), torch.ones(1, 2), beta=0.04)
    k3 = 0.5 - math.log(0.5) - 1
    close(out.loss, -1 + 0.04 * k3)
    close(out.kl, k3)
    close(out.pg_loss, -1.0)
    close(out.clip_fraction, 0.0)
    # outcome advantage given per response [N] is broadcast to tokens
    out2 = alg.grpo_loss(lp, lp, ref, torch.ones(1), torch.ones(1, 2), beta=0.04)
    close(out2.loss, out.loss)
    with pytest.raises(ValueError, match="needs ref_logp"):
        alg.grpo_loss(lp, lp, None, torch.ones(1, 2), torch.ones(1, 2), beta=0.04)


def test_grpo_kl_gradient_on_policy():
    # d k3 / d logp = d/dx [exp(ref - x) - (ref - x) - 1] = -exp(ref - x) + 1 = 1 - 0.5 = 0.5
    # d(-rho A)/d logp = -A * rho = -1 ; total per token -1 + 0.04 * 0.5 = -0.98 ; /2 tokens
    lp = torch.full((1, 2), math.log(0.5), requires_grad=True)
    ref = torch.full((1, 2), math.log(0.25))
    out = alg.grpo_loss(lp, lp.detach(), ref, torch.ones(1, 2), torch.ones(1, 2), beta=0.04)
    out.loss.backward()
    close(lp.grad, [[-0.98 / 2, -0.98 / 2]])


# --------------------------------------------------------------------------- DAPO overlong, RFT


def test_overlong_penalty():
    # L_max 10, cache 4 -> free up to 6; 8 -> (6 - 8)/4 = -0.5 ; 10 -> -1 ; 11 -> -1
    out = alg.overlong_penalty(torch.tensor([3, 6, 7, 8, 10, 11]), 10, 4)
    close(out, [0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError, match="cache_length"):
        alg.overlong_penalty(torch.tensor([1]), 10, 0)


def test_rft_coefficient_and_loss():
    assert alg.rft_coefficient(torch.tensor([True, False, True])).tolist() == [1.0, 0.0, 1.0]
    lp = torch.tensor([[-1.0, -3.0], [-2.0, -2.0]], requires_grad=True)
    loss = alg.rft_loss(lp, torch.tensor([1, 0]), torch.ones(2, 2))
    # seq 0 correct: mean(1, 3) = 2 ; seq 1 wrong: 0 -> (2 + 0)/2 = 1
    close(loss, 1.0)
    loss.backward()
    # d/dlogp of -(coef*logp) averaged: seq 0 tokens -1/2/2 = -0.25, seq 1 zero
    close(lp.grad, [[-0.25, -0.25], [0.0, 0.0]])


# --------------------------------------------------------------------------- GAE and value loss


def test_gae_hand_example():
    # V = [0.5, 0.4, 0.2], r = [0, 0, 1], gamma 1, lam 0.5
    # t2: delta = 1 + 0 - 0.2 = 0.8 ; A2 = 0.8
    # t1: delta = 0 + 0.2 - 0.4 = -0.2 ; A1 = -0.2 + 0.5 * 0.8 = 0.2
    # t0: delta = 0 + 0.4 - 0.5 = -0.1 ; A0 = -0.1 + 0.5 * 0.2 = 0.0
    # returns = A + V = [0.5, 0.6, 1.0]
    # second row (gamma 1, right-padded by one): V = [0.3, 0.6, 9], r = [0, 1, 9], mask [1,1,0]
    # t1: delta = 1 + 0 - 0.6 = 0.4 ; A1 = 0.4 ; t0: delta = 0 + 0.6 - 0.3 = 0.3 ; A0 = 0.3 + 0.2 = 0.5
    r = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 9.0]])
    v = torch.tensor([[0.5, 0.4, 0.2], [0.3, 0.6, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = alg.gae_advantages(r, v, m, gamma=1.0, lam=0.5)
    close(adv, [[0.0, 0.2, 0.8], [0.5, 0.4, 0.0]])
    close(ret, [[0.5, 0.6, 1.0], [0.8, 1.0, 0.0]])


def test_gae_discount():
    # gamma 0.9, lam 1, V = 0, r = [0, 1]: A1 = 1 ; A0 = 0 + 0.9 * 0 - 0 + 0.9 * 1 = 0.9
    adv, ret = alg.gae_advantages(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2),
                                  gamma=0.9, lam=1.0)
    close(adv, [[0.9, 1.0]])
    close(ret, [[0.9, 1.0]])


def test_clipped_value_loss():
    # V_old = 0, V = [0.5, 0.1], R = [1, 1], clip 0.2
    # tok0: V_clip = 0.2 ; (0.5-1)^2 = 0.25 ; (0.2-1)^2 = 0.64 -> 0.5*0.64 = 0.32, clipped won
    # tok1: V_clip = 0.1 ; both (0.9)^2 = 0.81 -> 0.405, not clipped
    # token mean = (0.32 + 0.405)/2 = 0.3625 ; clip fraction 1/2
    loss, frac = alg.value_loss(torch.tensor([[0.5, 0.1]]), torch.zeros(1, 2),
                                torch.ones(1, 2), torch.ones(1, 2), clip_range=0.2)
    close(loss, 0.3625)
    close(frac, 0.5)
