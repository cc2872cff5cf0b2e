"""Iterative RL (the paper's Algorithm 1) with a learned reward model.

``IterativeRLStage`` is the RL stage whose reward model keeps learning:
after each RL iteration (``--rl-iteration-steps``), before pi_ref <- pi_theta
(``RLStage.end_rl_iteration``), it

1. samples G solutions for ``--rm-refresh-questions`` training questions from
   the current policy (split over data-parallel ranks, gathered);
2. labels them as the reward model learns: graded against the reference
   answer (outcome RM), or Math-Shepherd step labels from the same policy
   (process RM: every step prefix completed ``--rm-shepherd-samples`` times
   in one batched generate call; ``rl.rm_sampling``);
3. continues training the reward model on the new records plus a replay of
   old ones (``--rm-replay``, the paper's 10%: the RM's original data given
   by ``--rm-replay-data`` and earlier refreshes) for ``--rm-update-iters``
   steps, with its own recipe (``--rm-recipe``; default the paper's lr 2e-5)
   on its own ``Trainer`` through ``Trainer.fit``.

The reward model that scores the rollouts is that trainer's model, so every
rollout after a refresh is scored by the refreshed weights.  Its state
(weights, optimizer, LR schedule, steps and samples consumed) goes into
every RL checkpoint as ``reward_model/`` (a reward-model checkpoint of its
own) with the refreshes' records (``reward_model_data.jsonl``), written
before the checkpoint is published; a refresh draws its questions and
replay from a generator seeded by ``--seed`` and the refresh number, so a
resumed run repeats exactly what the uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

import torch

from megatron_dsm import checkpoint
from megatron_dsm.config import ConfigError
from megatron_dsm.io import read_jsonl, write_jsonl
from megatron_dsm.models import config as model_config
from megatron_dsm.models.gpt import unwrap
from megatron_dsm.models.value_head import build_value_model, load_weights
from megatron_dsm.rl import rm_sampling
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.loop import RLStage
from megatron_dsm.rl.reward_models import RMConfig, RewardModelStage
from megatron_dsm.rl.rm_data import read_records, record_to_example
from megatron_dsm.rl.sampler import data_parallel
from megatron_dsm.training.arguments import TrainConfig, parse_args
from megatron_dsm.training.loop import Trainer

DATA_FILE = "reward_model_data.jsonl"
RM_DIR = "reward_model"


def with_replay(new: Sequence[dict], history: Sequence[dict], replay: float,
                rng: random.Random) -> list[dict]:
    """``new`` plus old records drawn from ``history`` so that they make up
    ``replay`` of the mix: n_old = round(replay / (1 - replay) * len(new))
    (capped by the history's size)."""
    if not 0.0 <= replay < 1.0:
        raise ValueError(f"replay share must be in [0, 1), got {replay}")
    n_old = min(len(history), round(replay / (1.0 - replay) * len(new)))
    mix = list(new) + rng.sample(list(history), n_old)
    rng.shuffle(mix)
    return mix


def rm_train_config(rl: RLConfig, policy: TrainConfig, *, bf16: bool | None = None) -> TrainConfig:
    """The reward model's own recipe for iterative RL: the ``train:`` section
    of ``--rm-recipe`` (or the paper's: lr 2e-5, constant), run at the
    policy's layout and precision (the RM lives in the policy's processes),
    ``--rm-update-iters`` steps per refresh, no checkpoints or logs of its
    own (it is saved inside the RL checkpoints)."""
    if rl.rm_recipe:
        if not Path(rl.rm_recipe).is_file():
            raise ConfigError(f"--rm-recipe {rl.rm_recipe}: file not found")
        base = parse_args(["--config", rl.rm_recipe], extra=RMConfig)[0]
    else:
        base = TrainConfig(lr=2e-5, lr_decay_style="constant", weight_decay=0.0)
    return dataclasses.replace(
        base, train_iters=rl.rm_update_iters, tensor_model_parallel_size=policy.tensor_model_parallel_size,
        pipeline_model_parallel_size=1, sequence_parallel=False, use_te=policy.use_te,
        bf16=policy.bf16 if bf16 is None else bf16, load=None, save=None, save_interval=None,
        finetune=False, exit_interval=None, eval_interval=None, tensorboard_dir=None, log_json=None,
        wandb_project=None)


def read_replay_data(rl: RLConfig, kind: str, separator: str) -> list[dict]:
    """``--rm-replay-data`` records, each checked now (one error naming file
    and line) so that a bad file stops the run before any model exists."""
    if not rl.rm_replay_data:
        return []
    rows = read_records(rl.rm_replay_data)
    for path, lineno, rec in rows:
        try:
            record_to_example(rec, kind, separator=separator)
        except ValueError as e:
            raise ConfigError(f"{path}:{lineno}: {e}") from None
    return [rec for _, _, rec in rows]


class IterativeRLStage(RLStage):
    """``RLStage`` with Algorithm 1's reward-model refresh (module docstring).
    ``served`` is the run's ``rm_serving.InProcessRewardModel`` (the one the
    rewards score with); ``rm_train`` the RM's recipe (``rm_train_config``);
    ``replay`` the RM's original records."""

    def __init__(self, cfg: RLConfig, tokenizer, train_items, heldout_items, *, reward, served,
                 rm_train: TrainConfig, replay: Sequence[dict] = (), step_reward=None,
                 model_builder=None):
        super().__init__(cfg, tokenizer, train_items, heldout_items, reward=reward,
                         step_reward=step_reward, model_builder=model_builder)
        self.served, self.rm_train = served, rm_train
        self.rm_model_cfg = model_config.from_checkpoint(served.load)
        self.rm_cfg = RMConfig(rm_type=served.kind, step_separator=served.separator,
                               aggregate=served.record.get("aggregate", "min"),
                               grader=served.record.get("grader", "dsm"))
        self.replay, self.history = list(replay), []
        self.refreshes = 0
        self.rm_trainer: Trainer | None = None
        self.hooks.append(IterativeRLStage.refresh)

    def setup(self, trainer) -> None:
        # the reward model's trainer first: the served reward model is its model
        self.rm_trainer = Trainer(self.rm_train, self.rm_model_cfg,
                                  model_builder=lambda c, tc: build_value_model(c, tc, use_te=self.rm_train.use_te))
        self.rm_trainer.writer.enabled = False      # the log lines stay the RL stage's
        info = load_weights(self.rm_trainer.model, self.served.load)
        if not info["head_loaded"]:
            raise ConfigError(f"{self.served.load}: checkpoint has no value head")
        self.served.serve(unwrap(self.rm_trainer.model))
        super().setup(trainer)

    # -- Algorithm 1, lines 9-11 ------------------------------------------------
    def refresh(self) -> dict:
        """New RM records from the policy, replay, RM training; returns the
        RM's last logged metrics."""
        cfg, k = self.cfg, self.refreshes
        rng = random.Random(self.trainer.train_cfg.seed * 1_000_003 + 7919 * (k + 1))
        new = self._new_records(rng, k)
        mix = with_replay(new, self.replay + self.history, cfg.rm_replay, rng)
        self.history.extend(new)
        stage = RewardModelStage(self.rm_trainer.train_cfg, self.rm_model_cfg, self.rm_cfg,
                                 tokenizer=self.tok, records=mix)
        last = self.rm_trainer.fit(stage, train_iters=self.rm_trainer.iteration + cfg.rm_update_iters)
        self.served.forget()
        self.refreshes += 1
        loss = f", rm loss {last['rm loss']:.4f}" if "rm loss" in last else ""
        self.trainer.writer.text(
            f" iterative RL: reward model refresh {self.refreshes} ({self.rm_cfg.rm_type}): {len(new)} new + "
            f"{len(mix) - len(new)} replayed records, {cfg.rm_update_iters} steps at lr "
            f"{self.rm_trainer.current_lr():.3E}{loss}")
        return last

    def _new_records(self, rng: random.Random, k: int) -> list[dict]:
        cfg = self.cfg
        n_q = cfg.rm_refresh_questions or cfg.prompts_per_step
        picks = [self.train_items[rng.randrange(len(self.train_items))] for _ in range(n_q)]
        dp_rank, dp_size, group = data_parallel()
        mine = picks[dp_rank::dp_size]
        seed = self.trainer.train_cfg.seed * 131 + 104_729 * (k + 1) + dp_rank
        kw = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                  weights_from=self.trainer.model)
        samples = rm_sampling.sample_solutions(self.sampler, mine, n=cfg.group_size, seed=seed, **kw) \
            if mine else []
        if self.rm_cfg.rm_type == "outcome":
            recs = rm_sampling.outcome_records(samples, grader=self.rm_cfg.grader)
        else:
            prompts = {it.question: it.prompt for it in mine}
            policy = rm_sampling.SamplerPolicy(self.sampler, prompts.__getitem__, separator=self.rm_cfg.step_separator,
                                               seed=seed + 1, **kw)
            recs = rm_sampling.process_records(samples, policy, n=cfg.rm_shepherd_samples, mode=cfg.rm_label_mode,
                                               separator=self.rm_cfg.step_separator, grader=self.rm_cfg.grader)
        if dp_size == 1:
            return recs
        parts: list = [None] * dp_size
        torch.distributed.all_gather_object(parts, recs, group=group)
        return [r for part in parts for r in part]

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["iterative_rm"] = {"refreshes": self.refreshes, "records": len(self.history),
                              "rm_iteration": self.rm_trainer.iteration}
        return sd

    def write_files(self, directory: Path) -> None:
        """The reward model's trainer state (a reward-model checkpoint under
        ``reward_model/``) and the refreshes' records, before the RL
        checkpoint is published."""
        super().write_files(directory)
        t = self.rm_trainer
        if t.iteration > 0:
            common = dict(t.state_dict(), reward_model=self.served.record)
            checkpoint.save_checkpoint(str(Path(directory) / RM_DIR), t.iteration, unwrap(t.model),
                                       t.optimizer, common)
        if self.trainer.rank == 0 and self.history:
            write_jsonl(Path(directory) / DATA_FILE, self.history)

    def load_state_dict(self, common: dict, directory: Path) -> None:
        super().load_state_dict(common, directory)
        st = common.get("iterative_rm")
        if not st:      # a fresh run from an SFT or non-iterative checkpoint: the RM as loaded
            return
        self.refreshes = int(st["refreshes"])
        self.history = []
        if st["records"]:
            self.history = [r for _, r in read_jsonl(Path(directory) / DATA_FILE)]
            if len(self.history) != int(st["records"]):
                raise checkpoint.CheckpointError(f"{directory}/{DATA_FILE} holds {len(self.history)} "
                                                 f"records, the checkpoint says {st['records']}")
        if int(st["rm_iteration"]) > 0:
            t = self.rm_trainer
            loaded = checkpoint.load_checkpoint(str(Path(directory) / RM_DIR), unwrap(t.model), t.optimizer)
            t.load_state_dict(loaded)
