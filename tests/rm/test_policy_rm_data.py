"""Reward-model data from a trained policy checkpoint (rl/rm_sampling.py,
tools/build_prm_data.py): a small policy SFT'd on the arithmetic task's
worked solutions samples solutions through its rollout engine; they are
graded (ORM records) and their steps labelled the Math-Shepherd way with
completions from the same checkpoint, every step prefix of every solution in
one batched generate call with n samples each."""
import json
import os
import subprocess
import sys

import pytest

from megatron_dsm.checkpoint import read_latest
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.eval.grading import grade
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.rl import prm_toy, rm_sampling
from megatron_dsm.rl.arith_task import PROMPT_TEMPLATE, generate_problems
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.rewards import RuleReward
from megatron_dsm.rl.toy import ToySFTStage, items_from_problems
from megatron_dsm.training.arguments import TrainConfig
from megatron_dsm.training.loop import Trainer

SEP = prm_toy.STEP_SEPARATOR


@pytest.fixture(scope="module")
def policy(tmp_path_factory, dist_cleanup):
    """A policy SFT'd for 60 steps on worked solutions (it writes the steps)."""
    save = tmp_path_factory.mktemp("policy") / "sft"
    tr, _ = generate_problems(300, 10, seed=4, max_value=9, two_step_prob=1.0)
    t = TrainConfig(train_iters=60, micro_batch_size=32, global_batch_size=32, lr=3e-3, seed=2,
                    lr_decay_style="constant", weight_decay=0.0, log_interval=60, save=str(save))
    m = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                    vocab_size=259, seq_length=160)
    tok = build_tokenizer("byte")
    rl = RLConfig(max_new_tokens=32, rl_eval_size=20)
    trainer = Trainer(t, m)
    trainer.fit(ToySFTStage(tr, items_from_problems(tr[:20]), tok, RuleReward(), rl, eval_every=60, seed=2))
    trainer.close()
    assert read_latest(save) == 60
    return str(save)


def test_math_shepherd_labels_from_the_checkpoint_in_one_generate_call(policy):
    tok = build_tokenizer("byte")
    sampler = rm_sampling.load_policy_sampler(policy, tok)
    calls = []
    real = sampler.engine.generate

    def counted(prompts, params):
        calls.append((len(prompts), params.n))
        return real(prompts, params)

    sampler.engine.generate = counted
    _, held = generate_problems(10, 6, seed=4, max_value=9, two_step_prob=1.0)
    items = items_from_problems(held)
    samples = rm_sampling.sample_solutions(sampler, items, n=3, max_new_tokens=32, seed=1)
    assert calls == [(6, 3)] and len(samples) == 18
    # the policy writes worked solutions: most samples have the three steps
    steps = [len(s["solution"].split(SEP)) for s in samples]
    assert sum(n == 3 for n in steps) >= 9, [s["solution"] for s in samples]

    prompts = {it.question: it.prompt for it in items}
    kw = dict(separator=SEP, max_new_tokens=32, seed=5)
    hard_policy = rm_sampling.SamplerPolicy(sampler, prompts.__getitem__, **kw)
    calls.clear()
    hard = rm_sampling.process_records(samples, hard_policy, n=4, mode="hard", separator=SEP)
    prefixes = sum(len(r["steps"]) - 1 for r in hard)
    assert calls == [(prefixes, 4)]                       # every prefix, one call, n=4 each
    soft = rm_sampling.process_records(samples, rm_sampling.SamplerPolicy(sampler, prompts.__getitem__, **kw),
                                       n=4, mode="soft", separator=SEP)
    for h, s in zip(hard, soft):
        assert h["steps"] == s["steps"] and len(h["step_labels"]) == len(h["steps"])
        # same completions (same seed): hard = any success, soft = the share in quarters
        assert h["step_labels"] == [float(x > 0) for x in s["step_labels"]]
        assert all(x * 4 == int(x * 4) for x in s["step_labels"])
        # the last step is the whole solution: its label is the solution's grade
        assert h["step_labels"][-1] == float(grade(SEP.join(h["steps"]), h["answer"]))
    labels = [x for r in soft for x in r["step_labels"]]
    assert 0 < sum(labels) < len(labels)                  # both kinds of steps occur
    print(f"\n{len(hard)} sampled solutions, {prefixes} step prefixes x 4 completions in one call; "
          f"mean soft label {sum(labels) / len(labels):.3f}")
    orm = rm_sampling.outcome_records(samples)
    assert [r["label"] for r in orm] == [float(grade(s["solution"], s["answer"])) for s in samples
                                         if s["solution"].strip()]


def test_build_prm_data_writes_prm_and_orm_data_from_the_checkpoint(policy, tmp_path, repo_root):
    _, held = generate_problems(10, 4, seed=4, max_value=9, two_step_prob=1.0)
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in held))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, str(repo_root / "tools" / "build_prm_data.py"), "--policy-load", policy,
                        "--questions", str(q), "--tokenizer-type", "byte", "--prompt-template", PROMPT_TEMPLATE,
                        "--solutions-per-question", "2", "--samples", "2", "--step-separator", SEP,
                        "--max-new-tokens", "32", "--output", str(tmp_path / "prm.jsonl"),
                        "--orm-output", str(tmp_path / "orm.jsonl")],
                       cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    prm = [json.loads(x) for x in (tmp_path / "prm.jsonl").read_text().splitlines()]
    orm = [json.loads(x) for x in (tmp_path / "orm.jsonl").read_text().splitlines()]
    assert len(orm) == 8 and {r["question"] for r in orm} == {p.question for p in held}
    assert all(r["label"] in (0.0, 1.0) for r in orm)
    assert prm and all(len(r["steps"]) == len(r["step_labels"]) for r in prm)
    assert f"-> {tmp_path / 'prm.jsonl'}" in p.stdout and f"-> {tmp_path / 'orm.jsonl'}" in p.stdout
