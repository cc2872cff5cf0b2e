"""The sampler's log-probs against the trainer's: a rollout engine other than
the trained model itself (vLLM's kernels, bf16) gives slightly different
numbers for the same tokens and weights, so its samples are slightly
off-policy.  Small pure functions over tensors, as in ``algorithms.py``."""

from __future__ import annotations

import torch
from torch import Tensor

from megatron_dsm.rl.algorithms import _LOG_RATIO_CLAMP, _check_same_shape, masked_mean


def truncated_is_weights(old_logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance sampling: min(pi_old / pi_sampler, cap) per token,
    without gradient.  A rollout engine's numbers (vLLM's kernels, bf16)
    differ from the trainer's, so its samples are slightly off-policy; a
    token's policy loss weighted by this ratio corrects for that, and the cap
    bounds the variance.  For the clipped surrogate, weighting the loss by
    w >= 0 is scaling the advantage by w (min(w x, w y) = w min(x, y))."""
    _check_same_shape("old_logp", old_logp, "sampler_logp", sampler_logp)
    if cap <= 0:
        raise ValueError(f"TIS cap must be > 0, got {cap}")
    return torch.exp((old_logp - sampler_logp).detach().clamp(max=_LOG_RATIO_CLAMP)).clamp(max=cap)


def logprob_mismatch(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, max) over masked tokens of |log pi_trainer - log pi_sampler|, the
    same tokens under the same weights: 0 up to rounding for an exact sampler."""
    _check_same_shape("trainer_logp", trainer_logp, "sampler_logp", sampler_logp)
    diff = (trainer_logp.detach() - sampler_logp).abs() * mask
    return masked_mean(diff, mask), diff.max() if diff.numel() else diff.sum()
