"""RL algorithms: small pure functions over torch tensors, and a registry
of algorithms by name.

Everything the GRPO / PPO / RFT loops compute from rewards, log-probs and
values lives here, with no model, optimizer or process group in sight, so that
each formula can be checked against hand arithmetic (tests/rl/test_algorithms.py).
At the end, ``Algorithm`` is what the RL loop (rl/loop.py) asks of an
algorithm, and ``register`` / ``get_algorithm`` find one by the name
``--algorithm`` gives; the built-in ones (grpo, rft, online-rft, ppo) are in
rl/builtin_algorithms.py.

Shapes and conventions
----------------------
* ``N`` responses, laid out group by group: responses ``g*G .. g*G+G-1`` are the
  ``G`` samples drawn for question ``g`` (the order the rollout produces).
* Token tensors are ``[N, T]`` (right-padded responses); ``mask`` is 1 on a
  response token that takes part in the loss, 0 on padding.
* Log-probs are per-token log pi(o_t | q, o_<t) of the sampled token.
* Losses are to be *minimised*; the paper's objectives are maximised, hence the
  minus signs.

Equations (DeepSeekMath, arXiv 2402.03300, section 4.1):

    J_GRPO = E[ 1/G sum_i 1/|o_i| sum_t { min(rho_it A_it, clip(rho_it, 1-eps, 1+eps) A_it)
                                          - beta D_KL[pi || pi_ref] } ]
    rho_it = pi(o_it) / pi_old(o_it)
    D_KL   = pi_ref/pi - log(pi_ref/pi) - 1                     (k3, unbiased, >= 0)

Outcome supervision: A_it = (r_i - mean(r)) / std(r) for every token of o_i.
Process supervision: step rewards of all outputs of the group are normalised
together, and A_it = sum of normalised step rewards of the steps ending at or
after token t.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Callable, ClassVar

import torch

from megatron_dsm.config import ConfigError

Tensor = torch.Tensor

AGG_MODES = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")

# Log-ratios are clamped to this before exp() in the KL estimators, so that a
# token whose probability collapsed under one policy yields a large finite
# penalty instead of inf/NaN (exp(20) ~ 4.9e8).
_LOG_RATIO_CLAMP = 20.0


# ---------------------------------------------------------------------------
# masked reductions
# ---------------------------------------------------------------------------


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has {tuple(b.shape)}")


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(values * mask) over ``dim`` (all elements when None)."""
    _check_same_shape("values", values, "mask", mask)
    prod = values * mask
    return prod.sum() if dim is None else prod.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(values * mask) / sum(mask); 0 where the mask is empty (never NaN)."""
    total = masked_sum(values, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp_min(1)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the masked entries; Bessel-corrected when ``unbiased``."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp_min(1)
    return var


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> Tensor:
    """(values - mean) / sqrt(var + eps) over the masked entries (used for PPO
    advantages).  With ``shift_mean=False`` the mean is added back, so only the
    scale changes.  Masked-out entries come back as 0."""
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# ---------------------------------------------------------------------------
# group statistics and advantages
# ---------------------------------------------------------------------------


def _groups(x: Tensor, group_size: int, what: str) -> Tensor:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if x.shape[0] % group_size:
        raise ValueError(f"{what}: {x.shape[0]} responses is not a multiple of group_size {group_size}")
    return x.reshape(x.shape[0] // group_size, group_size, *x.shape[1:])


def zero_spread_groups(rewards: Tensor, group_size: int) -> Tensor:
    """Bool [num_groups]: True where every sample of the group got the same
    reward.  Such a group has no relative signal: its GRPO advantage is 0, and
    DAPO's dynamic sampling drops it."""
    g = _groups(rewards.reshape(rewards.shape[0], -1), group_size, "rewards")
    flat = g.reshape(g.shape[0], -1)
    return (flat == flat[:, :1]).all(dim=1)


def dynamic_sampling_keep_mask(rewards: Tensor, group_size: int) -> Tensor:
    """Bool [N]: False for every sample of a group whose rewards are all equal
    (DAPO dynamic sampling: those groups are dropped and re-filled)."""
    keep_groups = ~zero_spread_groups(rewards, group_size)
    return keep_groups.repeat_interleave(group_size)


@dataclasses.dataclass
class AdvantageStats:
    """What an advantage computation reports besides the advantages."""

    zero_spread: Tensor  # bool [num_groups]
    group_mean: Tensor   # [num_groups]
    group_std: Tensor    # [num_groups]

    @property
    def num_zero_spread(self) -> int:
        return int(self.zero_spread.sum())

    @property
    def zero_spread_fraction(self) -> float:
        n = self.zero_spread.numel()
        return float(self.zero_spread.float().mean()) if n else 0.0


def outcome_advantage(rewards: Tensor, group_size: int, eps: float = 1e-6,
                      scale_by_std: bool = True, unbiased_std: bool = True
                      ) -> tuple[Tensor, AdvantageStats]:
    """Outcome-supervision advantage, one value per response.

        A_i = (r_i - mean(r_group)) / (std(r_group) + eps)        (GRPO)
        A_i =  r_i - mean(r_group)                                 (Dr. GRPO: scale_by_std=False)

    ``rewards`` is [N] (N = num_groups * group_size, grouped contiguously).
    The std is torch's (Bessel-corrected unless ``unbiased_std=False``).
    Groups whose rewards are all equal ("zero spread") are counted in the
    returned stats and get exactly 0 advantage, so they add no policy
    gradient (and no 0/0).  Broadcast to tokens with ``A[:, None] * mask``.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    r = _groups(rewards.float(), group_size, "rewards")  # [num_groups, G]
    mean = r.mean(dim=1)
    std = r.std(dim=1, unbiased=unbiased_std) if group_size > 1 else torch.zeros_like(mean)
    zero = zero_spread_groups(rewards, group_size)
    adv = r - mean[:, None]
    if scale_by_std:
        adv = adv / (std[:, None] + eps)
    adv = torch.where(zero[:, None], torch.zeros_like(adv), adv)
    return adv.reshape(-1), AdvantageStats(zero, mean, std)


def process_advantage(step_rewards: Tensor, step_ends: Tensor, step_mask: Tensor,
                      response_mask: Tensor, group_size: int, eps: float = 1e-6,
                      scale_by_std: bool = True, unbiased_std: bool = True
                      ) -> tuple[Tensor, AdvantageStats]:
    """Process-supervision advantage, one value per token.

    step_rewards  [N, K]  reward of step j of response i (padded)
    step_ends     [N, K]  index (into the response's tokens) of the last token of step j
    step_mask     [N, K]  1 for a real step, 0 for padding
    response_mask [N, T]  1 on response tokens

    All real step rewards of a group's G responses are normalised together:
        r~_ij = (r_ij - mean(R_group)) / (std(R_group) + eps)
    and the advantage of token t of response i sums the normalised rewards of
    the steps that end at or after t:
        A_it = sum_{j : end(j) >= t} r~_ij.
    Vectorised: each r~_ij is scattered to its end position, and a reversed
    cumulative sum along the tokens gives the suffix sums.  Tokens after the
    last step end get 0; groups with zero spread are counted and get 0.
    """
    _check_same_shape("step_rewards", step_rewards, "step_ends", step_ends)
    _check_same_shape("step_rewards", step_rewards, "step_mask", step_mask)
    if step_rewards.dim() != 2 or response_mask.dim() != 2:
        raise ValueError("step tensors must be [N, K] and response_mask [N, T], got "
                         f"{tuple(step_rewards.shape)} and {tuple(response_mask.shape)}")
    if step_rewards.shape[0] != response_mask.shape[0]:
        raise ValueError(f"step_rewards has {step_rewards.shape[0]} responses but "
                         f"response_mask has {response_mask.shape[0]}")
    n, t_len = response_mask.shape
    smask = step_mask.bool()
    ends = step_ends.long()
    bad = smask & ((ends < 0) | (ends >= t_len))
    if bad.any():
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"step_ends[{i}, {j}] = {int(ends[i, j])} is outside the response "
                         f"(length {t_len})")

    r = _groups(step_rewards.float(), group_size, "step_rewards")        # [ng, G, K]
    m = _groups(smask.float(), group_size, "step_mask")                  # [ng, G, K]
    ng = r.shape[0]
    r_flat, m_flat = r.reshape(ng, -1), m.reshape(ng, -1)
    count = m_flat.sum(dim=1)
    mean = (r_flat * m_flat).sum(dim=1) / count.clamp_min(1)
    sq = ((r_flat - mean[:, None]) ** 2 * m_flat).sum(dim=1)
    denom = (count - 1).clamp_min(1) if unbiased_std else count.clamp_min(1)
    std = torch.sqrt(sq / denom)
    # zero spread: every real step reward of the group equal (or no steps at all)
    big = torch.finfo(r_flat.dtype).max
    hi = torch.where(m_flat.bool(), r_flat, torch.full_like(r_flat, -big)).amax(dim=1)
    lo = torch.where(m_flat.bool(), r_flat, torch.full_like(r_flat, big)).amin(dim=1)
    zero = (count == 0) | (hi == lo)

    norm = r - mean[:, None, None]
    if scale_by_std:
        norm = norm / (std[:, None, None] + eps)
    norm = norm * m
    norm = torch.where(zero[:, None, None], torch.zeros_like(norm), norm)
    norm = norm.reshape(n, -1)                                           # [N, K]

    at_end = torch.zeros(n, t_len, dtype=norm.dtype, device=norm.device)
    at_end.scatter_add_(1, ends.clamp(0, t_len - 1), norm)               # padded steps add 0
    suffix = at_end.flip(1).cumsum(1).flip(1)
    return suffix * response_mask, AdvantageStats(zero, mean, std)


def overlong_penalty(lengths: Tensor, max_length: int, cache_length: int) -> Tensor:
    """DAPO soft overlong punishment, added to the reward of each response.

        0                               if L <= L_max - L_cache
        ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
        -1                              if L > L_max
    """
    if cache_length <= 0 or cache_length > max_length:
        raise ValueError(f"cache_length must be in (0, max_length={max_length}], got {cache_length}")
    lengths = lengths.float()
    start = max_length - cache_length
    ramp = (start - lengths) / cache_length
    out = torch.where(lengths <= start, torch.zeros_like(lengths), ramp)
    return torch.where(lengths > max_length, torch.full_like(lengths, -1.0), out)


def rft_coefficient(correct: Tensor) -> Tensor:
    """RFT / Online-RFT gradient coefficient (paper section 5.2.1): 1 for a
    sample whose answer is correct, 0 otherwise."""
    return correct.to(torch.float32).gt(0).float()


# ---------------------------------------------------------------------------
# KL estimators and entropy
# ---------------------------------------------------------------------------


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled token's log-probs.

    k1 = log pi - log pi_ref                         (unbiased, can be < 0)
    k2 = 1/2 (log pi - log pi_ref)^2                 (biased, >= 0)
    k3 = pi_ref/pi - log(pi_ref/pi) - 1              (the paper's: unbiased, >= 0)
       = exp(ref_logp - logp) - (ref_logp - logp) - 1
    """
    _check_same_shape("logp", logp, "ref_logp", ref_logp)
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    if kind == "k3":
        log_ratio = (ref_logp - logp).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; choose from {KL_ESTIMATORS}")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dim: logsumexp(z) - sum p z."""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)


# ---------------------------------------------------------------------------
# loss aggregation and losses
# ---------------------------------------------------------------------------


def aggregate_parts(loss_mat: Tensor, mask: Tensor, mode: str = "seq-mean-token-mean",
                    max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """A per-token loss [N, T] as (sum, count) over the units ``mode``
    averages; summed over micro-batches and data-parallel ranks and divided
    once (the training loop), the mean of the whole batch however it is split.

    seq-mean-token-mean      (sum_i 1/|o_i| sum_t l_it, N')  the paper's; N' = sequences with a token
    token-mean               (sum_it l_it, sum_i |o_i|)      every token weighs the same
    seq-mean-token-sum-norm  (sum_i 1/L sum_t l_it, N)       Dr. GRPO: L a constant, ``max_length``
                                                             (default T): no length bias
    """
    _check_same_shape("loss", loss_mat, "mask", mask)
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return masked_sum(loss_mat, mask), mask.sum()
    if mode == "seq-mean-token-mean":
        per_seq = masked_mean(loss_mat, mask, dim=-1)
        has = (mask.sum(-1) > 0).to(loss_mat.dtype)
        return (per_seq * has).sum(), has.sum()
    if mode == "seq-mean-token-sum-norm":
        norm = loss_mat.shape[-1] if max_length is None else max_length
        if norm <= 0:
            raise ValueError(f"max_length must be > 0, got {norm}")
        rows = torch.tensor(float(loss_mat.shape[0]), dtype=loss_mat.dtype, device=loss_mat.device)
        return (masked_sum(loss_mat, mask, dim=-1) / norm).sum(), rows
    raise ValueError(f"unknown loss aggregation mode {mode!r}; choose from {AGG_MODES}")


def ratio(parts: tuple[Tensor, ...]) -> Tensor:
    """sum / count of ``aggregate_parts``' answer (0 for no units)."""
    return parts[0] / parts[1].clamp_min(1)


def aggregate_loss(loss_mat: Tensor, mask: Tensor, mode: str = "seq-mean-token-mean",
                   max_length: int | None = None) -> Tensor:
    """Reduce a per-token loss [N, T] to a scalar (``aggregate_parts``)."""
    return ratio(aggregate_parts(loss_mat, mask, mode, max_length))


def clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor,
                      eps_low: float = 0.2, eps_high: float | None = None
                      ) -> tuple[Tensor, Tensor]:
    """Per-token PPO clipped surrogate, as a loss (negated objective).

        rho = exp(logp - old_logp)
        loss = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)

    ``eps_high`` > ``eps_low`` is DAPO's clip-higher (default: symmetric).
    Returns (per-token loss, bool "the clipped branch was taken", i.e. the
    gradient through rho is cut for that token).
    """
    _check_same_shape("logp", logp, "old_logp", old_logp)
    _check_same_shape("logp", logp, "advantages", advantages)
    eps_high = eps_low if eps_high is None else eps_high
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"clip range needs 0 <= eps_low < 1 and eps_high >= 0, got "
                         f"eps_low={eps_low}, eps_high={eps_high}")
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                eps_low: float = 0.2, eps_high: float | None = None,
                agg_mode: str = "seq-mean-token-mean", max_length: int | None = None
                ) -> tuple[Tensor, Tensor]:
    """Aggregated clipped-surrogate loss and the clip fraction (share of real
    tokens whose ratio was clipped)."""
    loss_mat, was_clipped = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    loss = aggregate_loss(loss_mat, mask, agg_mode, max_length)
    clip_frac = masked_mean(was_clipped.to(logp.dtype), mask.to(logp.dtype))
    return loss, clip_frac.detach()


@dataclasses.dataclass
class GRPOLossOutput:
    """Means, and the sums behind them: ``loss_sum`` and ``pg_sum`` over
    ``count`` units (``aggregate_parts``), ``kl_sum`` and ``clipped`` over ``tokens``."""

    loss: Tensor
    pg_loss: Tensor
    kl: Tensor
    clip_fraction: Tensor
    loss_sum: Tensor
    pg_sum: Tensor
    count: Tensor
    kl_sum: Tensor
    clipped: Tensor
    tokens: Tensor


def grpo_loss(logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, advantages: Tensor,
              mask: Tensor, beta: float = 0.04, eps_low: float = 0.2,
              eps_high: float | None = None, kl_kind: str = "k3",
              agg_mode: str = "seq-mean-token-mean", max_length: int | None = None
              ) -> GRPOLossOutput:
    """The GRPO loss: aggregate over tokens of

        -min(rho A, clip(rho) A) + beta * KL_k(pi || pi_ref)

    i.e. the negated J_GRPO of the paper (KL inside the loss, not the reward).
    ``advantages`` is per token [N, T] (outcome: ``A[:, None]`` expanded).
    With ``beta == 0`` no reference log-probs are needed.
    Reported ``kl`` is the token mean of the estimator (detached).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)
    pg_mat, was_clipped = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    mask = mask.to(logp.dtype)
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("grpo_loss: beta != 0 needs ref_logp")
        kl_mat = kl_penalty(logp, ref_logp, kl_kind)
        total_mat = pg_mat + beta * kl_mat
        kl_sum = masked_sum(kl_mat.detach(), mask)
    else:
        total_mat = pg_mat
        kl_sum = (masked_sum(kl_penalty(logp, ref_logp, kl_kind).detach(), mask)
                  if ref_logp is not None else torch.zeros((), dtype=logp.dtype, device=logp.device))
    loss_sum, count = aggregate_parts(total_mat, mask, agg_mode, max_length)
    pg_sum, _ = aggregate_parts(pg_mat.detach(), mask, agg_mode, max_length)
    tokens = mask.sum()
    clipped = masked_sum(was_clipped.to(logp.dtype), mask).detach()
    return GRPOLossOutput(ratio((loss_sum, count)), ratio((pg_sum, count)), ratio((kl_sum, tokens)),
                          ratio((clipped, tokens)), loss_sum, pg_sum, count, kl_sum, clipped, tokens)


def rft_loss(logp: Tensor, correct: Tensor, mask: Tensor,
             agg_mode: str = "seq-mean-token-mean", max_length: int | None = None) -> Tensor:
    """RFT / Online-RFT: maximise log-likelihood of correct samples only,
    i.e. gradient coefficient GC = 1 for correct and 0 for wrong samples
    (``aggregate_parts`` of ``-GC * logp``)."""
    coef = rft_coefficient(correct).to(logp.dtype)[:, None]
    return aggregate_loss(-coef * logp, mask, agg_mode, max_length)


# ---------------------------------------------------------------------------
# PPO with a critic (the paper's baseline)
# ---------------------------------------------------------------------------


def gae_advantages(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
                   lam: float = 1.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over right-padded responses.

        delta_t = r_t + gamma V_{t+1} - V_t           (V after the last real token = 0)
        A_t     = delta_t + gamma lam A_{t+1}
        R_t     = A_t + V_t                            (value-function target)

    Padding positions (mask 0) are skipped: they get A = R = 0 and do not
    break the recursion.  Returns (advantages, returns), both [N, T].
    """
    _check_same_shape("rewards", rewards, "values", values)
    _check_same_shape("rewards", rewards, "mask", mask)
    rewards, values, m = rewards.float(), values.float().detach(), mask.float()
    n, t_len = rewards.shape
    next_value = torch.zeros(n, dtype=values.dtype, device=values.device)
    next_adv = torch.zeros_like(next_value)
    advs = []
    for t in reversed(range(t_len)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        mt = m[:, t]
        advs.append(adv_t * mt)
        next_value = mt * values[:, t] + (1 - mt) * next_value
        next_adv = mt * adv_t + (1 - mt) * next_adv
    adv = torch.stack(advs[::-1], dim=1)
    return adv, (adv + values) * m


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
               clip_range: float = 0.2, agg_mode: str = "token-mean",
               max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """PPO clipped value loss:

        V_clip = V_old + clip(V - V_old, -c, c)
        loss   = 1/2 max((V - R)^2, (V_clip - R)^2)

    Returns (aggregated loss, fraction of tokens where the clipped term won)."""
    _check_same_shape("values", values, "old_values", old_values)
    _check_same_shape("values", values, "returns", returns)
    v_clip = old_values + (values - old_values).clamp(-clip_range, clip_range)
    l1 = (values - returns) ** 2
    l2 = (v_clip - returns) ** 2
    loss_mat = 0.5 * torch.maximum(l1, l2)
    frac = masked_mean((l2 > l1).to(values.dtype), mask.to(values.dtype))
    return aggregate_loss(loss_mat, mask.to(values.dtype), agg_mode, max_length), frac.detach()


# ---------------------------------------------------------------------------
# algorithms by name
# ---------------------------------------------------------------------------


class Algorithm(abc.ABC):
    """One RL algorithm as the loop (rl/loop.py) runs it.

    The loop holds no algorithm names: it asks an instance (built with the
    run's ``RLConfig``) what it needs and calls its hooks in this order each
    step: rollout -> ``advantages`` -> (reference / old log-probs) ->
    ``before_update`` -> per policy update: ``loss`` per micro-batch, then
    ``after_update``.  A new algorithm is one subclass under ``@register``.

    Needs: ``needs_reference`` (pi_ref log-probs), ``needs_old_logprobs``
    (pi_old from a forward pass before the first update; otherwise the loss
    gets ``logp.detach()``), ``samples_from_initial`` (rollouts from a frozen
    copy of the initial policy instead of the live one), ``check_config`` /
    ``check`` (settings or inputs it cannot run with).  State of its own
    (PPO's critic) is built in ``setup`` and checkpointed by ``write_files`` /
    ``load_files``.
    """

    name: ClassVar[str] = ""
    samples_from_initial: ClassVar[bool] = False
    per_token_advantages: ClassVar[bool] = True      # [N, T] advantages (TIS can weight them)

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg) -> None:
        """``ConfigError`` for settings this algorithm cannot run with."""

    def check(self, *, step_reward) -> None:
        """``ValueError`` when the run lacks an input the algorithm needs."""

    @property
    def needs_reference(self) -> bool:
        return False

    @property
    def needs_old_logprobs(self) -> bool:
        return self.cfg.inner_updates > 1

    def setup(self, trainer) -> None:
        """Build models of its own beside the policy's ``trainer``."""

    @abc.abstractmethod
    def advantages(self, rollout, step_rewards: Callable | None) -> tuple[Tensor, Tensor | None]:
        """(advantages ``[N, T]`` or a coefficient ``[N]``, zero-spread groups
        or None for the groups of equal outcome rewards).  ``step_rewards()``
        scores the rollout's steps (None when the run has no step reward)."""

    def before_update(self, rollout, old: Tensor | None, ref: Tensor | None) -> dict:
        """After the log-prob passes, before the first update; returns metrics."""
        return {}

    @abc.abstractmethod
    def loss(self, logp: Tensor, old: Tensor, ref: Tensor | None, advantages: Tensor,
             mask: Tensor) -> tuple:
        """``(loss sum, count, metrics)`` of one micro-batch, normalised by the
        batch's count (``aggregate_parts``), or ``(mean, metrics)``, each
        micro-batch weighing the same; metrics ``policy loss``, ``kl``, ``clip fraction``."""

    def after_update(self, rollout) -> dict:
        """After each policy update; returns metrics."""
        return {}

    def write_files(self, directory: Path) -> None:
        """Files of this rank added to a checkpoint before it is published."""

    def load_files(self, directory: Path) -> None:
        """Restore what ``write_files`` wrote (resume, not fine-tune)."""


_REGISTRY: dict[str, type[Algorithm]] = {}


def register(name: str):
    """Class decorator: make an ``Algorithm`` subclass ``--algorithm NAME``."""
    def add(cls: type[Algorithm]) -> type[Algorithm]:
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"RL algorithm {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return add


def _builtins() -> dict[str, type[Algorithm]]:
    # import here, not at the top: the built-ins subclass Algorithm from this module
    from megatron_dsm.rl import builtin_algorithms  # noqa: F401

    return _REGISTRY


def algorithm_names() -> tuple[str, ...]:
    return tuple(_builtins())


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm registered as ``name``; a ``ConfigError`` naming the
    registered ones otherwise."""
    try:
        return _builtins()[name]
    except KeyError:
        raise ConfigError(f"rl: algorithm must be one of {algorithm_names()}, got {name!r}") from None
