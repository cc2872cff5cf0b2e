"""The RL stage as a command: options -> task, rewards, stage, Trainer -> fit.

``tools/grpo.py`` (and ``examples/grpo_dsm.sh`` through torchrun) call
``main``.  Questions come from the generated arithmetic task or from a jsonl
of ``{question, answer}`` records (GSM8K / MATH CoT questions for the
paper's recipe), prompted with the paper's zero-shot CoT instruction.
Rewards (``--reward``): the grader (rule), a program run in the sandbox
(pot), a learned outcome or process reward model (orm, prm), the grader
plus a weighted outcome-RM score (mixed), the toy task's checked steps
(arith-steps).  With ``--rm-update-iters`` the stage is iterative RL
(``rl.iterative``).  Every option, input and reward-model checkpoint is
checked before any model is built.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from megatron_dsm.config import ConfigError
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.io import read_jsonl
from megatron_dsm.rl import rewards as R
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.iterative import IterativeRLStage, read_replay_data, rm_train_config
from megatron_dsm.rl.loop import RLStage
from megatron_dsm.rl.rm_data import RewardDataError
from megatron_dsm.rl.rm_serving import InProcessRewardModel
from megatron_dsm.rl.rollout import Item
from megatron_dsm.rl.toy import items_from_problems, toy_items
from megatron_dsm.training.arguments import TrainConfig, parse_args
from megatron_dsm.training.loop import Trainer
from megatron_dsm.training.stage import stage_main

COT_PROMPT = ("User: {question}\nPlease reason step by step, and put your final answer "
              "within \\boxed{{}}.\n\nAssistant:")


def read_items(path: str, template: str = COT_PROMPT) -> list[Item]:
    """``{question (or problem), answer}`` records, prompted with ``template``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"RL questions file not found: {p}")
    items = []
    for n, rec in read_jsonl(p, error=ConfigError):
        q, a = rec.get("question") or rec.get("problem"), rec.get("answer")
        if not isinstance(q, str) or a is None:
            raise ConfigError(f"{p}:{n}: needs 'question' (or 'problem') and 'answer'")
        items.append(Item(template.format(question=q), q, str(a)))
    if not items:
        raise ConfigError(f"{p}: no questions")
    return items


def build_task(rl: RLConfig) -> tuple[list[Item], list[Item]]:
    if rl.task == "arith":
        tr, held = toy_items(rl)
        return items_from_problems(tr), items_from_problems(held)
    return read_items(rl.task), (read_items(rl.heldout_task) if rl.heldout_task else [])


def build_rewards(rl: RLConfig, tokenizer, vocab_size: int | None):
    """(outcome reward, step reward or None, the in-process reward model or
    None).  A learned reward's checkpoint is checked here against the
    policy's tokenizer and vocabulary (no model is built: ``RLStage.setup``
    builds it once the process groups exist)."""
    rule = R.RuleReward(rl.reward_correct, rl.reward_wrong, rl.format_penalty)
    if rl.reward in ("rule", "arith-steps"):
        step = R.ArithmeticStepReward(rl.reward_correct, rl.reward_wrong) if rl.reward == "arith-steps" else None
        return rule, step, None
    if rl.reward == "pot":
        return R.PoTReward(rl.reward_correct, rl.reward_wrong), None, None
    served = InProcessRewardModel(rl.reward_model, tokenizer, reward=rl.reward, vocab_size=vocab_size,
                                  offload=rl.offload_reward_model)
    if rl.reward == "mixed":
        return R.MixedReward(rule, served, rl.rm_weight), None, served
    step = R.PRMStepReward(served, served.separator) if rl.reward == "prm" else None
    return R.ORMReward(served), step, served


def build_stage(train: TrainConfig, model_cfg, rl: RLConfig, tokenizer) -> RLStage:
    """The RL stage of these options, every option and input checked (one
    ``ConfigError``) before any process group or model exists."""
    train_items, held = build_task(rl)
    rl.check_global_batch(train.global_batch_size)
    rl.check_pipeline(train.pipeline_model_parallel_size)
    outcome, step, served = build_rewards(rl, tokenizer, model_cfg.vocab_size)
    if not rl.rm_update_iters:
        return RLStage(rl, tokenizer, train_items, held, reward=outcome, step_reward=step)
    rm_train = rm_train_config(rl, train)
    # the reward model trains at the policy's layout: its batch must split over the same DP
    rm_train.num_microbatches(train.data_parallel_size(int(os.environ.get("WORLD_SIZE", "1"))))
    replay = read_replay_data(rl, served.kind, served.separator)
    return IterativeRLStage(rl, tokenizer, train_items, held, reward=outcome, step_reward=step,
                            served=served, rm_train=rm_train, replay=replay)


def run(argv=None) -> int:
    train, model_cfg, rl = parse_args(argv, extra=RLConfig)
    tok = build_tokenizer(rl.tokenizer_type, rl.tokenizer_model)
    if model_cfg.vocab_size is None:
        model_cfg.vocab_size = tok.vocab_size
    stage = build_stage(train, model_cfg, rl, tok)
    trainer = Trainer(train, model_cfg)
    trainer.fit(stage)
    trainer.close()
    return 0


def main(argv=None) -> int:
    """One error line (exit 2) for bad options, data or checkpoints."""
    return stage_main(lambda: run(argv), RewardDataError)


if __name__ == "__main__":
    sys.exit(main())
