"""The reward model of an RL run (rl/rm_serving.py, rl/run.py):

* checked against the policy before any model is built: a reward model of
  the other kind, another tokenizer (fingerprint) or another vocabulary is
  one ``error:`` line, exit status 2; so is PRM data without its step
  separator (the RM stage and tools/build_prm_data.py);
* built by ``setup`` once the process groups exist; with ``offload`` its
  weights leave the module between uses and come back only while it scores,
  with the same scores;
* ``--reward mixed`` is the rule reward plus the weighted RM probability;
* a process RM scores a rollout's solutions and steps in one pass;
* ``tools/grpo.py --reward orm|prm`` runs from the command line.
"""
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from megatron_dsm import platform
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.rl import rewards as R
from megatron_dsm.rl import reward_models, run
from megatron_dsm.rl.rm_serving import InProcessRewardModel, RewardModel
from megatron_dsm.training.arguments import TrainConfig
from tests.rm import toydata
from tests.rm.helpers import rm_checkpoint, small_tokenizer

POLICY = ["--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "4",
          "--ffn-hidden-size", "64", "--seq-length", "160", "--vocab-size", "259",
          "--micro-batch-size", "4", "--global-batch-size", "8", "--prompts-per-step", "2",
          "--group-size", "4", "--max-new-tokens", "8", "--train-iters", "1",
          "--task-train-size", "8", "--task-heldout-size", "2", "--rl-eval-size", "2"]
PAIRS = [("Tom has 3 pens and buys 4 more. How many pens does Tom have?", "3+4=7. The answer is 7."),
         ("Ann has 9 cards and loses 2. How many cards does Ann have?", "9-2=6. The answer is 6."),
         ("Sam has 5 eggs and gets 5 more. How many eggs does Sam have?", "The answer is 10.")]


@pytest.fixture(scope="module")
def rms(tmp_path_factory, dist_cleanup):
    d = tmp_path_factory.mktemp("rms")
    byte = build_tokenizer("byte")
    bpe = small_tokenizer(toydata.corpus_texts(), d / "tok" / "tokenizer.json", vocab_size=259)
    assert bpe.vocab_size == 259 and bpe.fingerprint != byte.fingerprint
    return {"orm": rm_checkpoint(d / "orm", "outcome", byte), "prm": rm_checkpoint(d / "prm", "process", byte),
            "bpe": rm_checkpoint(d / "bpe", "outcome", bpe),
            "big": rm_checkpoint(d / "big", "outcome", byte, vocab_size=320)}


def _no_models(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model was built before the bad input was reported")
    for mod in (run, reward_models):
        monkeypatch.setattr(mod, "Trainer", refuse)
    monkeypatch.setattr(InProcessRewardModel, "setup", refuse)


def _error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("reward,ckpt,extra,msg", [
    ("orm", "prm", [], r"--reward orm takes an outcome reward model, but .*prm.* is a process reward "
                      r"model \(use --reward prm\)"),
    ("mixed", "prm", [], r"--reward mixed takes an outcome reward model, but .* is a process"),
    ("prm", "orm", ["--supervision", "process"], r"--reward prm takes a process reward model, but .* is an "
                                                 r"outcome reward model \(use --reward orm \(or mixed\)\)"),
    ("orm", "bpe", [], r"reward model tokenizer \(fingerprint \w+\) differs from the policy's \(\w+, byte\)"),
    ("orm", "big", [], r"reward model vocabulary 320 differs from the policy's --vocab-size 259"),
])
def test_reward_checkpoint_mismatch_is_one_error_line_before_any_model(rms, monkeypatch, capsys,
                                                                        reward, ckpt, extra, msg):
    _no_models(monkeypatch)
    rc = run.main(POLICY + ["--reward", reward, "--reward-model", rms[ckpt]] + extra)
    assert rc == 2
    import re
    assert re.search(msg, _error_line(capsys))


def test_prm_data_without_its_step_separator_is_one_error_line(tmp_path, monkeypatch, capsys, repo_root):
    _no_models(monkeypatch)
    bad = tmp_path / "prm.jsonl"
    bad.write_text(json.dumps({"question": "q", "solution": "3+4=7. 7+1=8. The answer is 8.",
                               "step_labels": [1, 1, 1]}) + "\n")
    rc = reward_models.main(["--rm-type", "process", "--train-data", str(bad), "--tokenizer-type", "byte",
                             "--vocab-size", "259"])
    assert rc == 2
    assert _error_line(capsys) == (f"error: {bad}:1: the solution has no step separator '\\n\\n' but 3 step "
                                   "labels (set --step-separator to the text between its steps)")
    # the labelling tool: solutions none of which splits on the separator
    sols = tmp_path / "sols.jsonl"
    sols.write_text(json.dumps({"question": "q", "answer": "8", "solution": "3+4=7. 7+1=8. The answer is 8."}) + "\n")
    p = subprocess.run([sys.executable, str(repo_root / "tools" / "build_prm_data.py"), "--input", str(sols),
                        "--output", str(tmp_path / "o.jsonl"), "--policy", "tests.rm.toy_policy:complete"],
                       cwd=repo_root, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(repo_root), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 2 and p.stderr.strip() == (
        f"error: {sols}: no solution contains the step separator '\\n\\n'; give --step-separator "
        "(the text between steps) or 'steps' lists"), p.stderr


def _trainer_like():
    """What ``setup`` reads of the policy's trainer (TP=1, fp32), with the
    process groups up (the entry points above tear them down)."""
    platform.initialize_distributed(1, 1, seed=0)
    return types.SimpleNamespace(train_cfg=TrainConfig(), bf16=False)


def test_offloaded_reward_model_scores_the_same_and_holds_nothing_between_uses(rms):
    tok = build_tokenizer("byte")
    plain = InProcessRewardModel(rms["orm"], tok, reward="orm", vocab_size=259)
    parked = InProcessRewardModel(rms["orm"], tok, reward="orm", vocab_size=259, offload=True)
    plain.setup(_trainer_like())
    parked.setup(_trainer_like())
    full = sum(p.numel() * p.element_size() for p in plain.rm.model.parameters())
    assert parked.parked.resident_bytes() == 0            # released right after the build
    during = []
    parked.rm.model.register_forward_pre_hook(lambda m, a: during.append(parked.parked.resident_bytes()))
    want = plain.score(PAIRS)
    for call in range(2):
        got = parked.score(PAIRS if call == 0 else PAIRS[::-1])
        assert parked.parked.resident_bytes() == 0
        assert torch.equal(got, want if call == 0 else want.flip(0))
    assert during and all(b >= full for b in during)      # the weights were there while it scored
    assert parked.parked.moves == 1 + 2 * 2                # park at setup, then in and out per call


def test_bf16_reward_model_matches_fp32(rms):
    _trainer_like()
    tok = build_tokenizer("byte")
    fp32 = RewardModel.from_checkpoint(rms["orm"], tok)
    bf16 = RewardModel.from_checkpoint(rms["orm"], tok, bf16=True)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    a, b = fp32.score(PAIRS), bf16.score(PAIRS)
    assert b.dtype == torch.float32 and torch.allclose(a, b, atol=2e-2), (a, b)


def test_mixed_reward_is_rule_plus_weighted_rm_probability(rms):
    tok = build_tokenizer("byte")
    served = InProcessRewardModel(rms["orm"], tok, reward="mixed", vocab_size=259)
    mixed = R.MixedReward(R.RuleReward(1.0, 0.0), served, 0.25)
    mixed.setup(_trainer_like())
    q, sols = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    r, ok = mixed(q, sols, ["7", "7", "10"])               # the second is wrong (9-2 is 7)
    p = served.score(PAIRS)
    assert ok.tolist() == [True, False, True]
    assert torch.allclose(r, torch.tensor([1.0, 0.0, 1.0]) + 0.25 * p)


def test_process_rm_scores_solutions_and_steps_in_one_pass(rms):
    tok = build_tokenizer("byte")
    served = InProcessRewardModel(rms["prm"], tok, reward="prm", vocab_size=259)
    assert served.separator == ". "
    outcome, step = R.ORMReward(served), R.PRMStepReward(served, served.separator)
    outcome.setup(_trainer_like())
    calls = []
    served.rm.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    q, sols, refs = [p[0] for p in PAIRS], [" " + p[1] for p in PAIRS], ["7", "7", "10"]
    rewards, _ = outcome(q, sols, refs)
    ids = [tok.encode(s) for s in sols]
    sr = step(q, sols, refs, ids, tok.decode)
    assert len(calls) == 1
    assert sr.mask.sum(1).tolist() == [2.0, 2.0, 1.0]
    # the solution score is the weakest step (aggregate "min")
    assert torch.allclose(rewards, torch.stack([sr.rewards[i, :int(sr.mask[i].sum())].min() for i in range(3)]))
    # each step's reward sits on the token that ends it
    assert tok.decode(ids[0][:int(sr.ends[0, 0]) + 1]) == " 3+4=7"


@pytest.mark.parametrize("reward", ["orm", "prm"])
def test_grpo_command_with_a_learned_reward(rms, tmp_path, reward, repo_root):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    extra = ["--supervision", "process"] if reward == "prm" else []
    p = subprocess.run([sys.executable, str(repo_root / "tools" / "grpo.py"), *POLICY, "--train-iters", "2",
                        "--log-interval", "1", "--reward", reward, "--reward-model", rms[reward], *extra,
                        "--offload-reward-model", "--save", str(tmp_path / "ck")],
                       cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    from megatron_dsm.training.logging import parse_line

    lines = [x for x in map(parse_line, p.stdout.splitlines()) if x]
    assert [x["iteration"] for x in lines] == [1, 2]
    assert all(0.0 <= x["reward mean"] <= 1.0 for x in lines)       # RM probabilities
