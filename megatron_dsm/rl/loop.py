"""The RL stage on ``Trainer.fit`` (DeepSeekMath section 4.1, Algorithm 1).

One step of ``RLStage`` is one exploration stage:

1. take B questions (the data position is checkpointed) and sample G
   outputs each from pi_theta (or, for an algorithm that ``samples_from_initial``,
   from the frozen initial model) with the shared KV-cached sampler
   (``rl.sampler``; all TP ranks sample the same tokens), inside
   ``sampling()``: gradient buffers and optimizer state parked off the
   accelerator (``--offload-training-state``), a vLLM engine refitted from
   the policy first and its memory released after (it sleeps on a GPU);
2. reward every output (``rl.rewards``: grader, sandbox, ORM, PRM);
3. advantages from the algorithm (``rl.algorithms``: a registry by name,
   the built-ins in ``rl.builtin_algorithms``); groups whose rewards are all
   equal are counted ("zero-spread fraction");
4. pi_old log-probs: with one update per stage (the paper's setting)
   pi_old = pi_theta, so rho = exp(logp - logp.detach()) = 1 with the
   gradient of pi_theta and no extra forward; an algorithm that
   ``needs_old_logprobs`` (mu > 1, PPO) gets them from a forward pass before
   the first update.  pi_ref log-probs come from the frozen in-process
   reference copy (``rollout.ReferenceModel``) when the algorithm
   ``needs_reference``;
5. mu updates through ``Trainer.train_step`` with the algorithm's loss.
   The training log-probs are megatron-core's (vocab-parallel cross
   entropy); the sampler's log-probs of the same tokens are compared with
   them every step ("logprob mismatch": mean and max |difference|), and
   with ``--tis-cap C`` each token's policy loss is weighted by
   min(pi_old / pi_sampler, C) (truncated importance sampling).

Every ``rl_iteration_steps`` steps an RL iteration ends: the iteration hooks
run (iterative RL: new reward-model data from the grader, RM training with
replay, see ``rl.iterative``) and pi_ref <- pi_theta.  Held-out accuracy is
the stage's evaluation (``--rl-eval-interval``), in the step's log line.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.models.generation import SamplingParams
from megatron_dsm.models.gpt import build_model, unwrap
from megatron_dsm.rl import algorithms as alg
from megatron_dsm.rl import off_policy, packing
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.rollout import (Item, ReferenceModel, Rollout, RolloutBatch, build_batch,
                                     layout_logprobs, response_logprobs_chunked, response_matrix)
from megatron_dsm.rl.sampler import PolicySampler, data_parallel, engine_options
from megatron_dsm.training.offload import TrainingStateOffload
from megatron_dsm.training.stage import Stage, StepResult, loss_count, mean_metric


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


def dp_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each value over data-parallel ranks (same keys everywhere)."""
    _, size, group = data_parallel()
    if size == 1 or not values:
        return dict(values)
    keys = sorted(values)
    sums = platform.all_reduce_values([float(values[k]) for k in keys], group=group)
    return {k: float(v) / size for k, v in zip(keys, sums)}


class RLStage(Stage):
    """Any registered RL algorithm (``--algorithm``) as a stage of ``Trainer.fit``."""

    eval_title = "held-out evaluation"
    eval_prefix = ""
    eval_in_log_line = True

    def __init__(self, cfg: RLConfig, tokenizer, train_items: Sequence[Item],
                 heldout_items: Sequence[Item], *, reward, step_reward=None,
                 model_builder: Callable | None = None):
        self.cfg, self.tok = cfg, tokenizer
        self.train_items, self.heldout_items = list(train_items), list(heldout_items)
        self.reward, self.step_reward = reward, step_reward
        self.algorithm = alg.get_algorithm(cfg.algorithm)(cfg)
        self.algorithm.check(step_reward=step_reward)
        self.model_builder = model_builder
        self.order: QuestionOrder | None = None
        self.rl_iteration = 0
        self.hooks: list[Callable[["RLStage"], None]] = []
        self.trainer = self.sampler = self.initial_sampler = self.reference = self.initial = None

    # -- set-up -------------------------------------------------------------
    def setup(self, trainer) -> None:
        cfg, t = self.cfg, trainer.train_cfg
        self.trainer = trainer
        self.dp_rank, self.dp_size, _ = data_parallel()
        cfg.rows_per_rank(self.dp_size, t.micro_batch_size)
        # the algorithm's own models first (PPO's critic): model builds draw on the seeded RNG
        self.algorithm.setup(trainer)
        self.vocab_size = trainer.model_cfg.vocab_size
        self.offload = TrainingStateOffload(trainer.model, trainer.optimizer)
        self.sampler = self._sampler(trainer.model)
        # the policy's log-probs in training: each distinct prompt once where the model allows it
        self.packing = cfg.pack_prompts and packing.unsupported_reason(trainer.model) is None
        self.order = QuestionOrder(len(self.train_items), t.seed)
        build = self.model_builder or (lambda: build_model(trainer.model_cfg, trainer.tconfig, use_te=t.use_te))
        if self.algorithm.needs_reference:
            self.reference = ReferenceModel(trainer.model, build(), offload=cfg.offload_reference)
        if self.algorithm.samples_from_initial:
            # a frozen copy of the initial policy that is never reset
            self.initial = ReferenceModel(trainer.model, build(), offload=False)
            self.initial_sampler = self._sampler(self.initial.model)
        self._setup_rewards(trainer)

    def _setup_rewards(self, trainer) -> None:
        """In-process reward models are built here, after the process groups
        and before a restore (their builds draw on the seeded RNG)."""
        for part in (self.reward, self.step_reward):
            setup = getattr(part, "setup", None)
            if setup is not None:
                setup(trainer)

    def _sampler(self, model) -> PolicySampler:
        return PolicySampler(self.cfg.rollout_engine, model, self.tok, vocab_size=self.vocab_size,
                             model_cfg=self.trainer.model_cfg,
                             **engine_options(self.cfg, self.trainer.train_cfg.seed))

    @contextlib.contextmanager
    def sampling(self):
        """Memory around a phase that samples: the training state off the
        accelerator (``offload_training_state``), and the engine's memory
        released afterwards (vLLM's sleep on a GPU)."""
        with self.offload.offloaded(self.cfg.offload_training_state):
            try:
                yield
            finally:
                for s in (self.sampler, self.initial_sampler):
                    if s is not None:
                        s.release()

    def samples_per_step(self, trainer) -> int:
        return self.cfg.prompts_per_step * self.cfg.group_size

    # -- rollout ------------------------------------------------------------
    def sample(self, items: Sequence[Item], seed: int):
        """G samples per question from the policy the algorithm learns from."""
        cfg = self.cfg
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_p=cfg.top_p, n=cfg.group_size, stop_ids=(self.sampler.eod,), seed=seed)
        if self.initial_sampler is not None:
            # weights_from: an engine shared between samplers (vLLM) is refitted from the initial model
            return self.initial_sampler.generate(items, params, weights_from=self.initial.model)
        return self.sampler.generate(items, params, weights_from=self.trainer.model)

    def rollout(self) -> Rollout:
        cfg, g = self.cfg, self.cfg.group_size
        idx = self.order.take(cfg.prompts_per_step)
        per = cfg.prompts_per_step // self.dp_size
        items = [self.train_items[i] for i in idx[self.dp_rank * per:(self.dp_rank + 1) * per]]
        seed = self.trainer.train_cfg.seed * 7919 + self.trainer.iteration * 131 + self.dp_rank
        with self.sampling():
            out = self.sample(items, seed)
        rows = [it for it in items for _ in range(g)]
        texts = [self.sampler.decode_response(c) for c in out.completions]
        batch = build_batch(out.prompts, out.completions, self.sampler.pad_id)
        questions, answers = [r.question for r in rows], [r.answer for r in rows]
        rewards, correct = self.reward(questions, texts, answers)
        rewards = rewards.float()
        if cfg.overlong_buffer:
            lengths = torch.tensor(batch.response_lens, dtype=torch.float32)
            rewards = rewards + alg.overlong_penalty(lengths, cfg.max_new_tokens, cfg.overlong_buffer)
        ro = Rollout(batch, texts, rows, rewards, correct, out.seconds, out.new_tokens)
        ro.sampler_logprobs = response_matrix(out.logprobs, batch.mask.size(1))
        step_rewards = None
        if self.step_reward is not None:
            def step_rewards():
                return self.step_reward(questions, texts, answers, out.completions, self.tok.decode)
        ro.advantages, zero = self.algorithm.advantages(ro, step_rewards)
        if zero is None:
            zero = alg.zero_spread_groups(rewards, g)
        ro.zero_spread_fraction = float(zero.float().mean()) if zero.numel() else 0.0
        ro.loss_mask = batch.mask.clone()
        if cfg.dynamic_sampling:
            ro.loss_mask = ro.loss_mask * alg.dynamic_sampling_keep_mask(rewards, g).float()[:, None]
        return ro

    # -- loss ---------------------------------------------------------------
    def _loss_func(self, mb: dict, logp: torch.Tensor):
        """The algorithm's loss as (sum, count, metrics): normalised by the
        count over every micro-batch and data-parallel rank of the step."""
        mask = mb["mask"].to(logp.device)
        old = mb["old"].to(logp.device) if mb["old"] is not None else logp.detach()
        ref = mb["ref"].to(logp.device) if mb["ref"] is not None else None
        adv = mb["adv"].to(logp.device)
        sampler = mb.get("sampler")
        sampler = sampler.to(logp.device) if sampler is not None else None
        if sampler is not None and self.cfg.tis_cap:
            adv = adv * off_policy.truncated_is_weights(old, sampler, self.cfg.tis_cap)
        out = self.algorithm.loss(logp, old, ref, adv, mask)
        loss, count, metrics = out if len(out) == 3 else (out[0], loss_count(1), out[1])
        if sampler is not None:
            # the sampler's log-probs against megatron-core's, same tokens and weights
            mean, worst = off_policy.logprob_mismatch(old, sampler, mask)
            metrics["logprob mismatch"] = mean_metric(mean * mask.sum(), mask.sum())
            metrics["logprob mismatch max"] = worst
        # Monte-Carlo entropy: E_{o ~ pi}[-log pi(o)] over the sampled tokens.
        metrics["entropy"] = mean_metric(-alg.masked_sum(logp.detach(), mask), mask.sum())
        return loss, count, metrics

    def _packs(self, batch: RolloutBatch, mbs: int) -> list | None:
        """Each micro-batch's packed layout (``packing.pack_if_cheaper``: None
        for one that keeps rows), worked out once per step for the reference,
        old-policy and training passes; None when packing is off."""
        if not self.packing:
            return None
        config = unwrap(self.trainer.model).config
        return [packing.pack_if_cheaper(batch.rows(i, i + mbs), config)
                for i in range(0, batch.tokens.size(0), mbs)]

    def forward_step(self, data_iterator, model):
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
                        "sampler": None if ro.sampler_logprobs is None else ro.sampler_logprobs[sl],
                        "old": None if old is None else old[sl],
                        "ref": None if ref is None else ref[sl]})
        return out

    # -- one exploration stage ------------------------------------------------
    def step(self, trainer) -> StepResult:
        cfg = self.cfg
        if self._iteration_ends(trainer.iteration):
            self.end_rl_iteration()
        t0 = time.perf_counter()
        ro = self.rollout()
        t_roll = time.perf_counter() - t0
        mbs = trainer.train_cfg.micro_batch_size
        kw = dict(temperature=cfg.temperature, vocab_size=self.vocab_size)
        packs = self._packs(ro.batch, mbs)
        ref = self.reference.logprobs(ro.batch, mbs, packed=packs, **kw) if self.reference is not None else None
        old = None
        if self.algorithm.needs_old_logprobs:
            old = response_logprobs_chunked(unwrap(trainer.model), ro.batch, mbs, packed=packs, **kw)
        extra = self.algorithm.before_update(ro, old, ref)
        n_rows, seq = ro.batch.tokens.shape
        for _ in range(cfg.inner_updates):
            res = trainer.train_step(self.forward_step, self._microbatches(ro, old, ref, packs),
                                     seq_length=seq, micro_batch_size=mbs, num_microbatches=n_rows // mbs)
            extra.update(self.algorithm.after_update(ro))
        train_s = max(time.perf_counter() - t0 - t_roll, 1e-9)
        metrics = {"rl iteration": self.rl_iteration}
        metrics.update(dp_mean({
            "reward mean": float(ro.rewards.mean()),
            "reward std": float(ro.rewards.std()) if ro.rewards.numel() > 1 else 0.0,
            "accuracy": float(ro.correct.float().mean()),
            "response length": float(sum(ro.batch.response_lens) / len(ro.batch.response_lens)),
            "zero-spread fraction": ro.zero_spread_fraction,
            "rollout tokens per second": ro.new_tokens / max(ro.rollout_seconds, 1e-9),
            **({"refit seconds": self.sampler.engine.last_refit_seconds}
               if hasattr(self.sampler.engine, "last_refit_seconds") else {}),
            "train tokens per second": cfg.inner_updates * ro.batch.num_tokens / train_s,
        }))
        metrics.update(res.metrics)
        metrics.update(extra)
        return StepResult(metrics, res.grad_norm, res.skipped)

    # -- evaluation -----------------------------------------------------------
    def eval_interval(self, trainer) -> int | None:
        return self.cfg.rl_eval_interval if self.heldout_items else None

    def evaluate(self, trainer) -> dict:
        return {"heldout accuracy": self.accuracy()}

    def accuracy(self, items: Sequence[Item] | None = None, chunk: int = 128, *,
                 temperature: float = 0.0, n: int = 1, seed: int = 0) -> float:
        """Held-out accuracy of the policy (the first ``rl_eval_size``
        questions, split over DP ranks): greedy by default; with
        ``temperature > 0`` the mean accuracy of ``n`` samples per question
        (pass@1 estimated at that temperature)."""
        items = list(self.heldout_items if items is None else items)[:self.cfg.rl_eval_size]
        with self.sampling():
            return self.sampler.accuracy(items, self.reward, max_new_tokens=self.cfg.max_new_tokens,
                                         weights_from=self.trainer.model, temperature=temperature,
                                         top_p=self.cfg.top_p, n=n, seed=seed, chunk=chunk)

    # -- RL iterations ----------------------------------------------------------
    def _iteration_ends(self, iteration: int) -> bool:
        k = self.cfg.rl_iteration_steps
        return bool(k) and iteration > 0 and iteration % k == 0 and iteration // k > self.rl_iteration

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
    def _frozen(self) -> dict:
        """The frozen models this stage keeps, by the checkpoint folder they go in."""
        return {name: m for name, m in (("rl_reference", self.reference), ("rl_initial", self.initial))
                if m is not None}

    def state_dict(self) -> dict:
        return {"rl": {"rl_iteration": self.rl_iteration, "order": self.order.state(),
                       "algorithm": self.cfg.algorithm}}

    def write_files(self, directory: Path) -> None:
        """The frozen reference / initial models (dist checkpoints of their
        own: written once, sharded by TP/PP, loadable at another layout) and
        the algorithm's own files (PPO's critic), written before the
        checkpoint is published."""
        for name, frozen in self._frozen().items():
            frozen.save(Path(directory) / name)
        self.algorithm.write_files(Path(directory))

    def load_state_dict(self, common: dict, directory: Path) -> None:
        rl = common.get("rl")
        if not rl:
            # a fresh RL run from an SFT checkpoint: pi_ref = pi_init = the loaded policy
            for m in (self.reference, self.initial):
                if m is not None:
                    m.reset_to(self.trainer.model)
            return
        self.rl_iteration = int(rl["rl_iteration"])
        self.order.load(rl["order"])
        for name, frozen in self._frozen().items():
            d = Path(directory) / name
            if not (d / "metadata.json").is_file():
                # a fresh copy would be a random reference: refuse instead
                raise FileNotFoundError(f"{d} is missing: the checkpoint has no frozen "
                                        f"{name[3:]} model")
            frozen.load(d)
        self.algorithm.load_files(Path(directory))
