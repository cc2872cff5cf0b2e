"""The RL stage as a command: options -> task, rewards, Trainer, RLStage -> fit.

``tools/grpo.py`` (and ``examples/grpo_dsm.sh`` through torchrun) call
``main``.  Questions come from the generated arithmetic task or from a jsonl
of ``{question, answer}`` records (GSM8K / MATH CoT questions for the
paper's recipe), prompted with the paper's zero-shot CoT instruction.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from megatron_dsm import checkpoint
from megatron_dsm.config import ConfigError
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.io import read_jsonl
from megatron_dsm.models import config as model_config
from megatron_dsm.rl import rewards as R
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.iterative import IterativeRMRefresh
from megatron_dsm.rl.loop import RLStage
from megatron_dsm.rl.reward_models import RMConfig
from megatron_dsm.rl.rm_serving import RewardModel
from megatron_dsm.rl.rollout import Item
from megatron_dsm.rl.toy import items_from_problems, toy_items
from megatron_dsm.training.arguments import parse_args
from megatron_dsm.training.loop import Trainer
from megatron_dsm.training.stage import stage_main

COT_PROMPT = ("User: {question}\nPlease reason step by step, and put your final answer "
              "within \\boxed{{}}.\n\nAssistant:")


def read_items(path: str) -> list[Item]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"RL questions file not found: {p}")
    items = []
    for n, rec in read_jsonl(p, error=ConfigError):
        q, a = rec.get("question") or rec.get("problem"), rec.get("answer")
        if not isinstance(q, str) or a is None:
            raise ConfigError(f"{p}:{n}: needs 'question' (or 'problem') and 'answer'")
        items.append(Item(COT_PROMPT.format(question=q), q, str(a)))
    if not items:
        raise ConfigError(f"{p}: no questions")
    return items


def build_task(rl: RLConfig) -> tuple[list[Item], list[Item]]:
    if rl.task == "arith":
        tr, held = toy_items(rl)
        return items_from_problems(tr), items_from_problems(held)
    return read_items(rl.task), (read_items(rl.heldout_task) if rl.heldout_task else [])


def build_rewards(rl: RLConfig, tokenizer):
    step = None
    if rl.reward in ("rule", "arith-steps"):
        outcome = R.RuleReward(rl.reward_correct, rl.reward_wrong, rl.format_penalty)
        if rl.reward == "arith-steps":
            step = R.ArithmeticStepReward(rl.reward_correct, rl.reward_wrong)
    elif rl.reward == "pot":
        outcome = R.PoTReward(rl.reward_correct, rl.reward_wrong)
    else:
        rm = RewardModel.from_checkpoint(rl.reward_model, tokenizer)
        outcome = R.ORMReward(rm)
        if rl.reward == "prm":
            step = R.PRMStepReward(rm, rm.separator)
    return outcome, step


def iterative_hook(train, rl: RLConfig, outcome, step):
    """Iterative RL: after each RL iteration the reward model keeps training on
    fresh graded policy samples (10% replay) and the in-process reward reloads it."""
    common = checkpoint.read_common(rl.reward_model)
    rm_model = model_config.from_checkpoint(rl.reward_model)
    rec = common.get("reward_model", {})
    rm_cfg = RMConfig(rm_type="outcome", tokenizer_type=rl.tokenizer_type,
                      tokenizer_model=rl.tokenizer_model, aggregate=rec.get("aggregate", "min"))
    rm_train = dataclasses.replace(train, train_iters=rl.rm_update_iters, save_interval=None,
                                   load=None, lr_decay_iters=None)

    def reload(path):
        rm = RewardModel.from_checkpoint(path, outcome.model.tokenizer)
        outcome.model = rm
        if step is not None:
            step.model = rm

    work = (train.save or "runs/grpo") + "/iterative_rm"
    return IterativeRMRefresh(rm_train, rm_model, rm_cfg, work, rl.reward_model,
                              questions_per_refresh=rl.prompts_per_step, replay=rl.rm_replay,
                              on_new_model=reload, seed=train.seed)


def run(argv=None) -> int:
    train, model_cfg, rl = parse_args(argv, extra=RLConfig)
    tok = build_tokenizer(rl.tokenizer_type, rl.tokenizer_model)
    if model_cfg.vocab_size is None:
        model_cfg.vocab_size = tok.vocab_size
    train_items, held = build_task(rl)
    rl.check_global_batch(train.global_batch_size)
    rl.check_pipeline(train.pipeline_model_parallel_size)
    outcome, step = build_rewards(rl, tok)
    trainer = Trainer(train, model_cfg)
    stage = RLStage(rl, tok, train_items, held, reward=outcome, step_reward=step)
    if rl.rm_update_iters:
        stage.hooks.append(iterative_hook(train, rl, outcome, step))
    trainer.fit(stage)
    trainer.close()
    return 0


def main(argv=None) -> int:
    """One error line (exit 2) for bad options, data or checkpoints."""
    return stage_main(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
