"""The registered RL algorithms of the paper's unified paradigm (section 5.2).

    grpo         GRPO, outcome (OS) or process (PS) supervision (``--supervision``)
    rft          data from the frozen initial (SFT) model, gradient coefficient 1 on correct
    online-rft   the same from the live policy
    ppo          PPO with a critic (value head, GAE), the KL in the per-token reward

Each says what it needs and gives its advantages and loss; the formulas are
the pure functions of rl/algorithms.py.
"""

from __future__ import annotations

import torch

from megatron_dsm.config import ConfigError
from megatron_dsm.rl import algorithms as alg
from megatron_dsm.rl.algorithms import Algorithm, register
from megatron_dsm.rl.ppo import Critic
from megatron_dsm.training.stage import loss_count, mean_metric


def clipped_policy_loss(logp, old, ref, advantages, mask, cfg, *, beta: float) -> tuple:
    """The clipped surrogate (+ beta * KL) of GRPO and PPO as (loss sum,
    count, metrics); the metrics are means over the whole batch."""
    out = alg.grpo_loss(logp, old, ref, advantages, mask, beta=beta, eps_low=cfg.eps_low,
                        eps_high=cfg.eps_high, kl_kind=cfg.kl_estimator, agg_mode=cfg.loss_agg,
                        max_length=cfg.max_new_tokens)
    return out.loss_sum, loss_count(out.count), {
        "policy loss": mean_metric(out.pg_sum, out.count), "kl": mean_metric(out.kl_sum, out.tokens),
        "clip fraction": mean_metric(out.clipped, out.tokens)}


@register("grpo")
class GRPO(Algorithm):
    """Group-relative advantages (section 4.1): outcome supervision gives
    every token of o_i the advantage (r_i - mean(r)) / std(r) of its group;
    process supervision normalises all step rewards of the group together and
    gives a token the sum over the steps ending at or after it.  The KL to
    pi_ref (``--beta``) is in the loss."""

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.group_size < 2:
            raise ConfigError("rl: GRPO needs group_size >= 2 (the baseline is the group mean)")

    def check(self, *, step_reward) -> None:
        if self.cfg.supervision == "process" and step_reward is None:
            raise ValueError("process supervision needs a step reward")

    @property
    def needs_reference(self) -> bool:
        return self.cfg.beta > 0

    def advantages(self, rollout, step_rewards):
        cfg, mask = self.cfg, rollout.batch.mask
        if cfg.supervision == "process":
            sr = step_rewards()
            adv, stats = alg.process_advantage(sr.rewards, sr.ends.clamp(max=mask.size(1) - 1), sr.mask,
                                               mask, cfg.group_size, scale_by_std=cfg.scale_rewards)
            return adv, stats.zero_spread
        a, _ = alg.outcome_advantage(rollout.rewards, cfg.group_size, scale_by_std=cfg.scale_rewards)
        return a[:, None] * mask, None

    def loss(self, logp, old, ref, advantages, mask):
        return clipped_policy_loss(logp, old, ref, advantages, mask, self.cfg, beta=self.cfg.beta)


@register("rft")
class RFT(Algorithm):
    """Rejection-sampling fine-tuning: maximise the likelihood of the correct
    samples of the frozen initial model (gradient coefficient 1 on correct,
    0 on wrong outputs)."""

    samples_from_initial = True
    per_token_advantages = False

    def advantages(self, rollout, step_rewards):
        return alg.rft_coefficient(rollout.correct), None

    def loss(self, logp, old, ref, advantages, mask):
        # the coefficient GC (alg.rft_loss) as (sum, count)
        total, count = alg.aggregate_parts(-advantages.to(logp.dtype)[:, None] * logp, mask,
                                           self.cfg.loss_agg, self.cfg.max_new_tokens)
        zero = torch.zeros((), dtype=logp.dtype)
        return total, loss_count(count), {"policy loss": mean_metric(total, count), "kl": zero,
                                      "clip fraction": zero.clone()}


@register("online-rft")
class OnlineRFT(RFT):
    """RFT on samples of the live policy."""

    samples_from_initial = False


@register("ppo")
class PPO(Algorithm):
    """PPO with a critic of the policy's size (rl/ppo.py): the KL to pi_ref
    enters the per-token reward, GAE gives the advantages, the critic takes
    an update after each policy update."""

    critic: Critic

    @property
    def needs_reference(self) -> bool:
        return self.cfg.beta > 0

    @property
    def needs_old_logprobs(self) -> bool:
        return True

    def setup(self, trainer) -> None:
        self.critic = Critic(trainer.train_cfg, trainer.model_cfg, init_from=trainer.model)

    def advantages(self, rollout, step_rewards):
        return torch.zeros_like(rollout.batch.mask), None   # from the critic, in before_update

    def before_update(self, rollout, old, ref) -> dict:
        rollout.advantages, metrics = self.critic.advantages(rollout, old, ref, self.cfg)
        return metrics

    def loss(self, logp, old, ref, advantages, mask):
        return clipped_policy_loss(logp, old, ref, advantages, mask, self.cfg, beta=0.0)

    def after_update(self, rollout) -> dict:
        return self.critic.update(rollout)

    def write_files(self, directory) -> None:
        self.critic.save(directory)

    def load_files(self, directory) -> None:
        self.critic.load(directory)
