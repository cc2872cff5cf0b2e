"""PPO's critic: the paper's baseline for GRPO (section 4.1, Figure 4).

PPO needs a value model V_psi of the policy's size, trained alongside the
policy; GRPO's point is dropping it.  ``Critic`` is that value model on its
own ``Trainer`` (megatron DDP + optimizer) built from
``models.value_head.build_value_model`` (GPTModel backbone + scalar head),
initialised from the policy's backbone.  The ``ppo`` algorithm
(rl/builtin_algorithms.py) uses it as follows (paper eq. 1-2):

    r_t  = -beta * (log pi_old(o_t) - log pi_ref(o_t))  + [t = last] * r(q, o)
    A_t  = GAE(gamma, lambda) over delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
    loss_V = 1/2 max((V - R)^2, (clip(V, V_old +- c) - R)^2),  R = A + V_old

and the policy takes the clipped surrogate with the whitened A_t (the KL
lives in the reward, not the loss).  V(s_t) is read at the position of the
token *before* response token t, the same column as its log-prob.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch

from megatron_dsm import platform
from megatron_dsm.models.gpt import unwrap
from megatron_dsm.models.value_head import build_value_model
from megatron_dsm.rl import algorithms as alg
from megatron_dsm.training.loop import Trainer
from megatron_dsm.training.stage import loss_count, mean_metric


class Critic:
    def __init__(self, train_cfg, model_cfg, *, init_from=None, value_clip: float = 0.2):
        cfg = dataclasses.replace(train_cfg, load=None, save=None, tensorboard_dir=None,
                                  log_json=None, wandb_project=None, finetune=False)
        self.trainer = Trainer(cfg, model_cfg,
                               model_builder=lambda c, tc: build_value_model(c, tc, use_te=cfg.use_te))
        self.value_clip = value_clip
        if init_from is not None:
            src = unwrap(init_from).state_dict()
            own = unwrap(self.trainer.model).state_dict()
            with torch.no_grad():
                for k, v in own.items():
                    if k in src and torch.is_tensor(v) and src[k].shape == v.shape:
                        v.copy_(src[k])
        self._returns = self._old_values = None

    def _values(self, model, batch) -> torch.Tensor:
        dev = platform.device()
        tokens = batch.tokens.to(dev)
        pos = torch.arange(tokens.size(1), device=dev)[None].expand(tokens.size(0), -1)
        v = model(tokens, pos, None)                             # [B, S]
        return v.gather(1, batch.index.to(dev)) * batch.mask.to(dev)

    @torch.no_grad()
    def values(self, batch, chunk: int) -> torch.Tensor:
        m = unwrap(self.trainer.model)
        was = m.training
        m.eval()
        try:
            return torch.cat([self._values(m, batch.rows(i, i + chunk))
                              for i in range(0, batch.tokens.size(0), chunk)], 0)
        finally:
            m.train(was)

    def advantages(self, ro, old_logp, ref_logp, cfg) -> tuple[torch.Tensor, dict]:
        mask = ro.loss_mask
        tok_r = torch.zeros_like(mask)
        if ref_logp is not None and cfg.beta:
            tok_r = -cfg.beta * alg.kl_penalty(old_logp.cpu(), ref_logp.cpu(), "k1") * mask
        last = (mask.sum(1).long() - 1).clamp_min(0)
        tok_r[torch.arange(mask.size(0)), last] += ro.rewards * (mask.sum(1) > 0).float()
        chunk = self.trainer.train_cfg.micro_batch_size
        v_old = self.values(ro.batch, chunk).cpu()
        adv, ret = alg.gae_advantages(tok_r, v_old, mask, cfg.gae_gamma, cfg.gae_lambda)
        self._returns, self._old_values = ret, v_old
        return alg.masked_whiten(adv, mask), {"value mean": float(alg.masked_mean(v_old, mask))}

    def _loss_func(self, mb, values):
        dev = values.device
        mask = mb["mask"].to(dev)
        loss, frac = alg.value_loss(values, mb["old"].to(dev), mb["ret"].to(dev), mask,
                                    clip_range=self.value_clip)
        # the token mean as (sum, tokens): the loop divides by the step's tokens
        count = mask.sum()
        total = loss * count
        return total, loss_count(count), {"value loss": mean_metric(total, count),
                                          "value clip fraction": frac.clone()}

    def _forward_step(self, data_iterator, model):
        mb = next(data_iterator)
        return self._values(model, mb["batch"]), functools.partial(self._loss_func, mb)

    def update(self, ro) -> dict:
        mbs = self.trainer.train_cfg.micro_batch_size
        n, s = ro.batch.tokens.shape
        mbatches = [{"batch": ro.batch.rows(i, i + mbs), "old": self._old_values[i:i + mbs],
                     "ret": self._returns[i:i + mbs], "mask": ro.loss_mask[i:i + mbs]}
                    for i in range(0, n, mbs)]
        res = self.trainer.train_step(self._forward_step, mbatches, seq_length=s,
                                      micro_batch_size=mbs, num_microbatches=n // mbs)
        return res.metrics

    def save(self, path: Path) -> None:
        torch.save({"model": unwrap(self.trainer.model).state_dict(),
                    "optimizer": self.trainer.optimizer.state_dict()},
                   Path(path) / f"critic_rank{self.trainer.rank}.pt")

    def load(self, path: Path) -> None:
        f = Path(path) / f"critic_rank{self.trainer.rank}.pt"
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: the checkpoint has no critic for this rank")
        st = torch.load(f, map_location="cpu", weights_only=False)
        unwrap(self.trainer.model).load_state_dict(st["model"], strict=False)
        self.trainer.optimizer.load_state_dict(st["optimizer"])
