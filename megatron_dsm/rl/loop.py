"""GRPO on the shared Trainer (DeepSeekMath section 4.1, Algorithm 1).

One *step* of ``RLLoop`` is one exploration stage:

1. take B questions (the data position is checkpointed) and sample G
   outputs each from pi_theta with the shared KV-cached sampler
   (``models.generation``; all TP ranks sample the same tokens);
2. reward every output (``rl.rewards``: grader, sandbox, ORM, PRM);
3. advantages (``rl.algorithms``):
   outcome  A_i,t = (r_i - mean(r)) / std(r)
   process  A_i,t = sum_{index(j) >= t} (r_i^index(j) - mean(R)) / std(R)
   groups whose rewards are all equal are counted ("zero-spread fraction")
   and get A = 0, so they add no policy gradient;
4. pi_old log-probs: with one update per stage (the paper's setting)
   pi_old = pi_theta, so rho = exp(logp - logp.detach()) = 1 with the
   gradient of pi_theta and no extra forward; with mu > 1 they come from a
   forward pass before the first update.  pi_ref log-probs come from the
   frozen in-process reference copy (``rollout.ReferenceModel``);
5. mu updates through ``Trainer.train_step`` with
   loss = aggregate( -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) + beta * KL_k3 ).

Every ``rl_iteration_steps`` steps an RL iteration ends: the iteration hooks
run (iterative RL: new reward-model data from the grader, RM training with
replay, see ``rl.iterative``) and pi_ref <- pi_theta.

The unified paradigm's other methods are settings of the same loop:
RFT samples from the frozen initial model and Online RFT from the live
policy, both with gradient coefficient 1 on correct outputs
(``algorithms.rft_loss``); PPO adds a critic (``rl.ppo.Critic``) and GAE with
the KL penalty in the per-token reward.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from typing import Callable, Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.models.direct_decode import engine_for
from megatron_dsm.models.generation import SamplingParams
from megatron_dsm.rl import algorithms as alg
from megatron_dsm.rl import packing
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.rollout import (ReferenceModel, RolloutBatch, build_batch, layout_logprobs,
                                     response_logprobs_chunked)
from megatron_dsm.models.gpt import unwrap


@dataclasses.dataclass
class Item:
    """One RL question: the prompt the policy sees, the bare question (for
    reward models) and the reference answer (for the grader)."""

    prompt: str
    question: str
    answer: str


class QuestionOrder:
    """Seeded per-epoch shuffle of the training questions; the position
    (epoch, offset) is part of the checkpoint so a resumed run continues
    with the very next question."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("no training questions")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._perm = self._make_perm()

    def _make_perm(self) -> list[int]:
        perm = list(range(self.n))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(perm)
        return perm

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._make_perm()
            out.append(self._perm[self.pos])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n, "seed": self.seed}

    def load(self, state: dict) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(f"checkpoint was taken over {state['n']} questions, this run has {self.n}")
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._make_perm()


def _dp():
    from megatron.core import parallel_state as ps

    return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(), ps.get_data_parallel_group()


def dp_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each value over data-parallel ranks (same keys everywhere)."""
    _, size, group = _dp()
    if size == 1 or not values:
        return dict(values)
    keys = sorted(values)
    sums = platform.all_reduce_values([float(values[k]) for k in keys], group=group)
    return {k: float(v) / size for k, v in zip(keys, sums)}


@dataclasses.dataclass
class Rollout:
    batch: RolloutBatch
    texts: list[str]
    items: list[Item]           # one per row (question repeated G times)
    rewards: torch.Tensor       # [N]
    correct: torch.Tensor       # [N] bool
    advantages: torch.Tensor    # [N, T] (GRPO / PPO) or coefficient [N] (RFT)
    loss_mask: torch.Tensor     # [N, T]
    zero_spread_fraction: float
    rollout_seconds: float
    new_tokens: int


class RLLoop:
    """GRPO (and RFT / Online RFT / PPO as settings) on a ``Trainer``."""

    def __init__(self, trainer, cfg: RLConfig, tokenizer, train_items: Sequence[Item],
                 heldout_items: Sequence[Item], *, reward, step_reward=None,
                 model_builder: Callable | None = None, critic=None):
        self.trainer, self.cfg, self.tok = trainer, cfg, tokenizer
        self.train_items, self.heldout_items = list(train_items), list(heldout_items)
        self.reward, self.step_reward, self.critic = reward, step_reward, critic
        if cfg.supervision == "process" and step_reward is None:
            raise ValueError("process supervision needs a step reward")
        if cfg.algorithm == "ppo" and critic is None:
            raise ValueError("algorithm=ppo needs a critic (rl.ppo.Critic)")
        t = trainer.train_cfg
        self.dp_rank, self.dp_size, _ = _dp()
        if cfg.prompts_per_step % self.dp_size:
            raise ValueError(f"prompts_per_step {cfg.prompts_per_step} is not divisible by the "
                             f"data-parallel size {self.dp_size}")
        self.rows_per_rank = cfg.prompts_per_step // self.dp_size * cfg.group_size
        if self.rows_per_rank % t.micro_batch_size:
            raise ValueError(f"{self.rows_per_rank} responses per rank (B/DP x G) is not divisible "
                             f"by micro_batch_size {t.micro_batch_size}")
        self.pad_id = int(getattr(tokenizer, "pad", None) or 0)
        self.eod = int(tokenizer.eod)
        self.vocab_size = trainer.model_cfg.vocab_size
        engine_kw = dict(pad_id=self.pad_id, vocab_size=self.vocab_size, decode=tokenizer.decode)
        self.engine = engine_for(cfg.rollout_engine, trainer.model, **engine_kw)
        # the policy's log-probs in training: each distinct prompt once where the model allows it
        self.packing = cfg.pack_prompts and packing.unsupported_reason(trainer.model) is None
        self.order = QuestionOrder(len(self.train_items), t.seed)
        self.rl_iteration = 0
        self.hooks: list[Callable[["RLLoop"], None]] = []
        build = model_builder or self._default_builder
        self.reference = None
        if cfg.beta > 0 and cfg.algorithm in ("grpo", "ppo"):
            self.reference = ReferenceModel(trainer.model, build(), offload=cfg.offload_reference)
        # RFT's data source is the initial model: a frozen copy that is never reset.
        self.initial = None
        if cfg.algorithm == "rft":
            self.initial = ReferenceModel(trainer.model, build(), offload=False)
            self.initial_engine = engine_for(cfg.rollout_engine, self.initial.model, **engine_kw)

    def _default_builder(self):
        from megatron_dsm.models.gpt import build_model

        return build_model(self.trainer.model_cfg, self.trainer.tconfig, use_te=self.trainer.train_cfg.use_te)

    # -- prompts ------------------------------------------------------------
    def encode_prompt(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode_response(self, ids: Sequence[int]) -> str:
        return self.tok.decode([i for i in ids if i != self.eod])

    # -- rollout ------------------------------------------------------------
    def _sample(self, items: Sequence[Item], seed: int):
        cfg = self.cfg
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_p=cfg.top_p, n=cfg.group_size, stop_ids=(self.eod,), seed=seed)
        engine = self.initial_engine if cfg.algorithm == "rft" else self.engine
        if engine is self.engine:
            engine.update_weights(self.trainer.model)
        return engine.generate([self.encode_prompt(it.prompt) for it in items], params)

    def rollout(self) -> Rollout:
        cfg, g = self.cfg, self.cfg.group_size
        idx = self.order.take(cfg.prompts_per_step)
        per = cfg.prompts_per_step // self.dp_size
        items = [self.train_items[i] for i in idx[self.dp_rank * per:(self.dp_rank + 1) * per]]
        seed = self.trainer.train_cfg.seed * 7919 + self.trainer.iteration * 131 + self.dp_rank
        out = self._sample(items, seed)
        rows = [it for it in items for _ in range(g)]
        texts = [self.decode_response(c) for c in out.completions]
        batch = build_batch(out.prompts, out.completions, self.pad_id)
        rewards, correct = self.reward([r.question for r in rows], texts, [r.answer for r in rows])
        rewards = rewards.float()
        if cfg.overlong_buffer:
            lengths = torch.tensor(batch.response_lens, dtype=torch.float32)
            rewards = rewards + alg.overlong_penalty(lengths, cfg.max_new_tokens, cfg.overlong_buffer)
        mask = batch.mask.clone()
        zero = alg.zero_spread_groups(rewards, g)
        if cfg.algorithm in ("rft", "online-rft"):
            adv = alg.rft_coefficient(correct)
        elif cfg.algorithm == "ppo":
            adv = torch.zeros_like(mask)   # filled by the critic in step()
        elif cfg.supervision == "process":
            sr = self.step_reward([r.question for r in rows], texts, [r.answer for r in rows],
                                  out.completions, self.tok.decode)
            adv, stats = alg.process_advantage(sr.rewards, sr.ends.clamp(max=mask.size(1) - 1),
                                               sr.mask, mask, g, scale_by_std=cfg.scale_rewards)
            zero = stats.zero_spread
        else:
            a, stats = alg.outcome_advantage(rewards, g, scale_by_std=cfg.scale_rewards)
            adv = a[:, None] * mask
        if cfg.dynamic_sampling:
            mask = mask * alg.dynamic_sampling_keep_mask(rewards, g).float()[:, None]
        return Rollout(batch, texts, rows, rewards, correct, adv, mask,
                       float(zero.float().mean()) if zero.numel() else 0.0,
                       out.seconds, out.new_tokens)

    # -- loss ---------------------------------------------------------------
    def _loss_func(self, mb: dict, logp: torch.Tensor):
        cfg = self.cfg
        mask = mb["mask"].to(logp.device)
        old = mb["old"].to(logp.device) if mb["old"] is not None else logp.detach()
        # Monte-Carlo entropy: E_{o ~ pi}[-log pi(o)] over the sampled tokens.
        entropy = -alg.masked_mean(logp.detach(), mask)
        if cfg.algorithm in ("rft", "online-rft"):
            loss = alg.rft_loss(logp, mb["adv"].to(logp.device), mask, cfg.loss_agg, cfg.max_new_tokens)
            zero = torch.zeros((), dtype=logp.dtype)
            return loss, {"policy loss": loss.detach().clone(), "kl": zero, "clip fraction": zero.clone(),
                          "entropy": entropy}
        ref = mb["ref"].to(logp.device) if mb["ref"] is not None else None
        beta = cfg.beta if cfg.algorithm == "grpo" else 0.0   # PPO: KL is in the reward
        out = alg.grpo_loss(logp, old, ref, mb["adv"].to(logp.device), mask, beta=beta,
                            eps_low=cfg.eps_low, eps_high=cfg.eps_high, kl_kind=cfg.kl_estimator,
                            agg_mode=cfg.loss_agg, max_length=cfg.max_new_tokens)
        return out.loss, {"policy loss": out.pg_loss.clone(), "kl": out.kl.clone(),
                          "clip fraction": out.clip_fraction.clone(), "entropy": entropy}

    def _packs(self, batch: RolloutBatch, mbs: int) -> list | None:
        """Each micro-batch's packed layout (``packing.pack_if_cheaper``: None
        for one that keeps rows), worked out once per step for the reference,
        old-policy and training passes; None when packing is off."""
        if not self.packing:
            return None
        config = unwrap(self.trainer.model).config
        return [packing.pack_if_cheaper(batch.rows(i, i + mbs), config)
                for i in range(0, batch.tokens.size(0), mbs)]

    def _forward_step(self, data_iterator, model):
        mb = next(data_iterator)
        logp = layout_logprobs(model, mb["batch"], mb["packed"],
                               temperature=self.cfg.temperature, vocab_size=self.vocab_size)
        return logp, functools.partial(self._loss_func, mb)

    def _microbatches(self, ro: Rollout, old, ref, packs) -> list[dict]:
        mbs = self.trainer.train_cfg.micro_batch_size
        out = []
        for k, i in enumerate(range(0, ro.batch.tokens.size(0), mbs)):
            sl = slice(i, i + mbs)
            out.append({"batch": ro.batch.rows(i, i + mbs), "mask": ro.loss_mask[sl],
                        "packed": None if packs is None else packs[k],
                        "adv": ro.advantages[sl],
                        "old": None if old is None else old[sl],
                        "ref": None if ref is None else ref[sl]})
        return out

    # -- one exploration stage ------------------------------------------------
    def step(self) -> dict:
        cfg, tr = self.cfg, self.trainer
        t0 = time.perf_counter()
        ro = self.rollout()
        t_roll = time.perf_counter() - t0
        mbs = tr.train_cfg.micro_batch_size
        kw = dict(temperature=cfg.temperature, vocab_size=self.vocab_size)
        packs = self._packs(ro.batch, mbs)
        ref = None
        if self.reference is not None:
            ref = self.reference.logprobs(ro.batch, mbs, packed=packs, **kw)
        old = None
        if cfg.inner_updates > 1 or cfg.algorithm == "ppo":
            old = response_logprobs_chunked(unwrap(tr.model), ro.batch, mbs, packed=packs, **kw)
        extra = {}
        if cfg.algorithm == "ppo":
            ro.advantages, extra = self.critic.advantages(ro, old, ref, cfg)
        n_rows, seq = ro.batch.tokens.shape
        results = []
        for _ in range(cfg.inner_updates):
            res = tr.train_step(self._forward_step, self._microbatches(ro, old, ref, packs),
                                seq_length=seq, micro_batch_size=mbs,
                                num_microbatches=n_rows // mbs)
            results.append(res)
            if cfg.algorithm == "ppo":
                extra.update(self.critic.update(ro))
        tr.consumed_samples += cfg.prompts_per_step * cfg.group_size
        elapsed = time.perf_counter() - t0
        train_s = max(elapsed - t_roll, 1e-9)
        last = results[-1]
        local = {
            "reward mean": float(ro.rewards.mean()),
            "reward std": float(ro.rewards.std()) if ro.rewards.numel() > 1 else 0.0,
            "accuracy": float(ro.correct.float().mean()),
            "response length": float(sum(ro.batch.response_lens) / len(ro.batch.response_lens)),
            "zero-spread fraction": ro.zero_spread_fraction,
            "rollout tokens per second": ro.new_tokens / max(ro.rollout_seconds, 1e-9),
            "train tokens per second": cfg.inner_updates * ro.batch.num_tokens / train_s,
        }
        metrics = dp_mean(local)
        metrics.update({k: v for k, v in last.metrics.items()})
        metrics.update(extra)
        if last.grad_norm is not None:
            metrics["grad norm"] = float(last.grad_norm)
        metrics["elapsed time per iteration (ms)"] = elapsed * 1000.0
        if last.skipped:
            metrics["skipped iterations"] = 1
        return metrics

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, items: Sequence[Item] | None = None, chunk: int = 128, *,
                 temperature: float = 0.0, n: int = 1, seed: int = 0) -> float:
        """Held-out accuracy (split over DP ranks): greedy by default; with
        ``temperature > 0`` the mean accuracy of ``n`` samples per question
        (pass@1 estimated at that temperature)."""
        items = list(self.heldout_items if items is None else items)[:self.cfg.rl_eval_size]
        if not items:
            raise ValueError("no held-out questions to evaluate")
        if temperature <= 0 and n != 1:
            raise ValueError("greedy evaluation takes one sample per question (n=1)")
        mine = items[self.dp_rank::self.dp_size]
        right = 0
        params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=temperature,
                                top_p=self.cfg.top_p if temperature > 0 else 1.0, n=n,
                                stop_ids=(self.eod,), seed=seed + self.dp_rank)
        self.engine.update_weights(self.trainer.model)
        for i in range(0, len(mine), chunk):
            part = mine[i:i + chunk]
            out = self.engine.generate([self.encode_prompt(it.prompt) for it in part], params)
            rows = [it for it in part for _ in range(n)]
            _, ok = self.reward([it.question for it in rows],
                                [self.decode_response(c) for c in out.completions],
                                [it.answer for it in rows])
            right += int(ok.sum())
        right, total = float(right), float(len(mine) * n)
        if self.dp_size > 1:
            right, total = platform.all_reduce_values([right, total], group=_dp()[2])
        return right / max(total, 1.0)

    # -- RL iterations ----------------------------------------------------------
    def end_rl_iteration(self) -> None:
        """Algorithm 1: hooks (reward-model refresh), then pi_ref <- pi_theta."""
        for hook in self.hooks:
            hook(self)
        if self.reference is not None:
            self.reference.reset_to(self.trainer.model)
        self.rl_iteration += 1
        self.trainer.writer.text(f" RL iteration {self.rl_iteration} begins at step "
                                 f"{self.trainer.iteration}: reference <- policy")

    # -- checkpoints --------------------------------------------------------------
    def state(self) -> dict:
        return {"rl_iteration": self.rl_iteration, "order": self.order.state(),
                "algorithm": self.cfg.algorithm}

    def save(self):
        """Policy checkpoint plus the frozen reference / initial models and the
        critic, all written before the checkpoint is published."""
        rank = self.trainer.rank

        def write_files(d):
            if self.reference is not None or self.initial is not None:
                keep = {"reference": self.reference.state_dict() if self.reference else None,
                        "initial": self.initial.state_dict() if self.initial else None}
                torch.save(keep, d / f"rl_frozen_models_rank{rank}.pt")
            if self.critic is not None:
                self.critic.save(d)

        return self.trainer.save(extra={"rl": self.state()}, write_files=write_files)

    def load(self) -> dict:
        common = self.trainer.load()
        rl = common.get("rl")
        if rl and not self.trainer.train_cfg.finetune:
            self.rl_iteration = int(rl["rl_iteration"])
            self.order.load(rl["order"])
            from pathlib import Path

            f = Path(common["loaded_from"]) / f"rl_frozen_models_rank{self.trainer.rank}.pt"
            if (self.reference is not None or self.initial is not None) and not f.is_file():
                # a fresh copy would be a random reference: refuse instead
                raise FileNotFoundError(f"{f} is missing: the checkpoint has no frozen "
                                        f"reference/initial model for this rank")
            if f.is_file():
                keep = torch.load(f, map_location="cpu", weights_only=True)
                if self.reference is not None and keep.get("reference"):
                    self.reference.load_state_dict(keep["reference"])
                if self.initial is not None and keep.get("initial"):
                    self.initial.load_state_dict(keep["initial"])
            if self.critic is not None:
                self.critic.load(Path(common["loaded_from"]))
        else:
            # a fresh RL run from an SFT checkpoint: pi_ref = pi_init = the loaded policy
            for m in (self.reference, self.initial):
                if m is not None:
                    m.reset_to(self.trainer.model)
        return common

    # -- the run ------------------------------------------------------------------
    def run(self, train_iters: int | None = None, on_log: Callable[[int, dict], None] | None = None) -> dict:
        tr, cfg = self.trainer, self.cfg
        t = tr.train_cfg
        total = train_iters or t.train_iters
        last: dict = {}
        while tr.iteration < total:
            if (cfg.rl_iteration_steps and tr.iteration > 0
                    and tr.iteration % cfg.rl_iteration_steps == 0
                    and tr.iteration // cfg.rl_iteration_steps > self.rl_iteration):
                self.end_rl_iteration()
            lr = tr.current_lr()
            m = self.step()
            it = tr.iteration
            fields = {"consumed samples": tr.consumed_samples,
                      "elapsed time per iteration (ms)": m.pop("elapsed time per iteration (ms)"),
                      "learning rate": lr, "rl iteration": self.rl_iteration}
            fields.update(m)
            if cfg.rl_eval_interval and it % cfg.rl_eval_interval == 0 and self.heldout_items:
                fields["heldout accuracy"] = self.evaluate()
            if it % t.log_interval == 0 or it == total or "heldout accuracy" in fields:
                tr.writer.log(it, total, fields)
            if on_log is not None:
                on_log(it, fields)
            last = dict(fields, iteration=it)
            if tr.should_save():
                self.save()
            if t.exit_interval and it % t.exit_interval == 0:
                break
        return last
