"""The sampler against the trainer: truncated importance-sampling weights
and the log-prob mismatch metric against hand arithmetic, TIS inside the
clipped surrogate, and the one-line errors of the rollout options."""
import math

import pytest
import torch

from megatron_dsm.config import ConfigError
from megatron_dsm.rl import algorithms as alg
from megatron_dsm.rl import off_policy
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.rollout import response_matrix


def test_truncated_is_weights_by_hand():
    old = torch.tensor([[math.log(0.5), math.log(0.2), math.log(0.9)]])
    sampler = torch.tensor([[math.log(0.25), math.log(0.4), math.log(0.1)]])
    # ratios pi_old / pi_sampler: 0.5/0.25 = 2, 0.2/0.4 = 0.5, 0.9/0.1 = 9 -> capped at 3
    w = off_policy.truncated_is_weights(old, sampler, cap=3.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 3.0]]), atol=1e-6, rtol=1e-6)
    # no gradient flows through the weights
    old_g = old.clone().requires_grad_(True)
    assert not off_policy.truncated_is_weights(old_g, sampler, 3.0).requires_grad
    with pytest.raises(ValueError, match="cap must be > 0"):
        off_policy.truncated_is_weights(old, sampler, 0.0)
    with pytest.raises(ValueError, match="shape"):
        off_policy.truncated_is_weights(old, sampler[:, :2], 2.0)


def test_logprob_mismatch_by_hand():
    trainer = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, 9.0]])
    sampler = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, -0.75, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])       # the 9.0 is padding
    mean, worst = off_policy.logprob_mismatch(trainer, sampler, mask)
    # |diffs| on real tokens: 0.5, 0, 1, 0, 0.5 -> mean 2/5 = 0.4, max 1
    assert float(mean) == pytest.approx(0.4) and float(worst) == pytest.approx(1.0)
    empty = off_policy.logprob_mismatch(trainer, sampler, torch.zeros_like(mask))
    assert float(empty[0]) == 0.0 and float(empty[1]) == 0.0


def test_tis_weighted_advantages_are_the_weighted_clipped_loss():
    """Weighting each token's clipped-surrogate loss by w >= 0 equals
    scaling its advantage by w (what the RL loop does)."""
    g = torch.Generator().manual_seed(0)
    logp, old, sampler = (torch.randn(3, 5, generator=g) * 0.3 - 1 for _ in range(3))
    adv = torch.randn(3, 5, generator=g)
    w = off_policy.truncated_is_weights(old, sampler, 2.0)
    scaled, clipped = alg.clipped_surrogate(logp, old, adv * w)
    plain, clipped_plain = alg.clipped_surrogate(logp, old, adv)
    torch.testing.assert_close(scaled, plain * w)
    assert torch.equal(clipped, clipped_plain & (w > 0))


def test_response_matrix_pads_rows():
    m = response_matrix([[-1.0, -2.0], [], [-3.0]], 3)
    assert m.tolist() == [[-1.0, -2.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="row 0: 2 values for at most 1"):
        response_matrix([[-1.0, -2.0]], 1)


@pytest.mark.parametrize("kw,msg", [
    (dict(rollout_batch=0), "rollout_batch must be >= 1"),
    (dict(rollout_kv_cache_gib=0.0), "rollout_kv_cache_gib must be > 0"),
    (dict(vllm_tensor_parallel_size=0), "vllm_tensor_parallel_size must be >= 1"),
    (dict(vllm_gpu_memory_utilization=1.5), r"vllm_gpu_memory_utilization must be in \(0, 1\]"),
    (dict(tis_cap=-1.0), "tis_cap must be >= 0"),
    (dict(tis_cap=2.0, algorithm="rft"), "per-sample coefficient"),
    (dict(rollout_engine="sglang"), "rollout_engine"),
])
def test_rollout_option_errors_are_one_line(kw, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        RLConfig(**kw)
    assert "\n" not in str(e.value)
