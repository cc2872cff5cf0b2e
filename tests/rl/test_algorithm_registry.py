"""RL algorithms by name: a new algorithm is one registered class that the
loop runs without knowing its name; the loop holds no algorithm names; an
unknown or miscased name is a config error naming the registered ones."""
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from megatron_dsm.config import ConfigError
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.models.gpt import unwrap
from megatron_dsm.rl import algorithms as alg
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.loop import RLStage
from megatron_dsm.rl.rewards import RuleReward
from megatron_dsm.rl.toy import items_from_problems, toy_items
from megatron_dsm.training.arguments import parse_args
from megatron_dsm.training.loop import Trainer
from tests.rl.grpo_worker import BASE

REPO = Path(__file__).resolve().parents[2]
CALLS: list[str] = []


@alg.register("toy-reinforce")
class ToyReinforce(alg.Algorithm):
    """REINFORCE with the group mean as baseline: A_i = r_i - mean(group),
    loss = -token-mean(A * log pi); no reference, no clipping."""

    def advantages(self, rollout, step_rewards):
        CALLS.append("advantages")
        r = rollout.rewards.view(-1, self.cfg.group_size)
        return (r - r.mean(1, keepdim=True)).view(-1)[:, None] * rollout.batch.mask, None

    def before_update(self, rollout, old, ref):
        CALLS.append("before_update")
        assert old is None and ref is None          # it asked for neither
        return {"toy advantage abs": float(rollout.advantages.abs().mean())}

    def loss(self, logp, old, ref, advantages, mask):
        CALLS.append("loss")
        loss = -alg.masked_mean(advantages * logp, mask)
        zero = torch.zeros((), dtype=logp.dtype)
        return loss, {"policy loss": loss.detach().clone(), "kl": zero, "clip fraction": zero.clone()}

    def after_update(self, rollout):
        CALLS.append("after_update")
        return {}


def test_a_registered_toy_algorithm_runs_through_the_loop(dist_cleanup, capsys):
    train, model_cfg, rl = parse_args(BASE + ["--train-iters", "2", "--beta", "0.04"], extra=RLConfig)
    rl = dataclasses.replace(rl, algorithm="toy-reinforce")      # validated against the registry
    tr_p, held_p = toy_items(rl)
    trainer = Trainer(train, model_cfg)
    stage = RLStage(rl, build_tokenizer("byte"), items_from_problems(tr_p), items_from_problems(held_p),
                    reward=RuleReward(1.0, 0.0, format_penalty=0.5))
    p0 = torch.cat([p.detach().reshape(-1).clone() for p in unwrap(trainer.model).parameters()])
    CALLS.clear()
    last = trainer.fit(stage)
    trainer.close()
    p1 = torch.cat([p.detach().reshape(-1) for p in unwrap(trainer.model).parameters()])
    assert stage.reference is None and stage.initial is None    # beta 0.04, but it needs no reference
    assert trainer.iteration == 2 and not torch.equal(p0, p1)
    # per step: advantages, before_update, one loss per micro-batch (16 rows / 8), after_update
    assert CALLS == ["advantages", "before_update", "loss", "loss", "after_update"] * 2
    assert last["iteration"] == 2 and "toy advantage abs" in last and "policy loss" in last
    assert "heldout accuracy" in last and "initial heldout accuracy" in last
    lines = [ln for ln in capsys.readouterr().out.splitlines() if re.match(r" iteration +\d+/", ln)]
    assert len(lines) == 2 and all("toy advantage abs:" in ln for ln in lines)


def test_unknown_or_miscased_algorithm_is_a_config_error():
    rl = RLConfig()
    for bad in ("GRPO", "reinforce"):
        with pytest.raises(ConfigError, match=rf"RLConfig.algorithm: '{bad}' is not one of .*grpo, rft, online-rft, ppo"):
            dataclasses.replace(rl, algorithm=bad)
    with pytest.raises(ValueError, match="registered twice"):
        alg.register("grpo")(ToyReinforce)


def test_the_loop_holds_no_algorithm_names():
    """Algorithm-specific branches live in the registry's classes only."""
    rl_dir = REPO / "megatron_dsm" / "rl"
    pattern = re.compile(r"(cfg|rl|self)\.algorithm\s*(==|!=|in\s*\()")
    hits = [f"{f.name}:{n}" for f in sorted(rl_dir.glob("*.py"))
            if f.name not in ("algorithms.py", "builtin_algorithms.py")
            for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
