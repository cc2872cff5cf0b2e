"""Outcome and process reward models train on CPU (loss falls) and beat
chance on held-out labels; the trained model reloads from its checkpoint and
scores in process; best-of-N reranking with it beats random choice.

Data (tests/rm/toydata.py): GSM8K-style arithmetic.  ORM: a solution whose
final number is right or corrupted, labelled by the project's grader against
the reference.  PRM: three steps with a planted wrong step, every step from
the error on labelled bad."""
import json
import os
import random

import pytest
import torch

from megatron_dsm import platform
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.rl import reward_metrics
from megatron_dsm.rl.reward_models import RMConfig, train_reward_model
from megatron_dsm.rl.rm_serving import RewardModel
from megatron_dsm.training.arguments import TrainConfig
from tests.rm import toydata
from tests.rm.helpers import small_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return small_tokenizer(toydata.corpus_texts(), tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _configs(tok, iters, lr, save):
    t = TrainConfig(train_iters=iters, micro_batch_size=16, global_batch_size=32, lr=lr,
                    lr_decay_style="constant", log_interval=25, eval_interval=iters, seed=3,
                    weight_decay=0.0, save=save)
    m = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=176,
                    vocab_size=tok.vocab_size, seq_length=64)
    return t, m


def test_outcome_rm_learns_and_serves(tmp_path, tok, dist_cleanup):
    rows = toydata.orm_records(600, seed=1)
    from megatron_dsm.eval.grading import grade
    assert sum(grade(r["solution"], r["answer"]) for r in rows) == 300   # grader labels: half right
    cfg = RMConfig(rm_type="outcome", train_data=[_write(tmp_path / "tr.jsonl", rows[:500])],
                   valid_data=[_write(tmp_path / "va.jsonl", rows[500:])])
    t, m = _configs(tok, 400, 1e-3, str(tmp_path / "orm"))
    out = train_reward_model(t, m, cfg, tokenizer=tok)
    print(f"\nORM held-out: acc {out['initial valid accuracy']:.3f} -> {out['valid accuracy']:.3f}, "
          f"AUC {out['initial valid auc']:.3f} -> {out['valid auc']:.3f}, "
          f"BCE {out['initial valid bce']:.4f} -> {out['valid bce']:.4f}; train loss {out['rm loss']:.4f}")
    assert out["rm loss"] < 0.6                       # from ln 2 = 0.693
    assert out["valid accuracy"] >= 0.62 and out["valid auc"] >= 0.7   # chance: 0.5 / 0.5

    # reload from the checkpoint and score in process (what GRPO calls)
    rm = RewardModel.from_checkpoint(str(tmp_path / "orm"), tok)
    assert rm.kind == "outcome"
    va = rows[500:]
    p = rm.score([(r["question"], r["solution"]) for r in va])
    y = [grade(r["solution"], r["answer"]) for r in va]
    assert p.shape == (100,) and bool(((p > 0) & (p < 1)).all())
    assert reward_metrics.auc(p.numpy(), y) == pytest.approx(out["valid auc"], abs=1e-6)

    # best-of-4 on held-out questions: one right solution, three corrupted ones
    rng = random.Random(7)
    groups = []
    for _ in range(40):
        q, a, b, d = toydata.question(rng)
        c = a + b + d
        finals = [c] + [toydata.wrong(rng, c) for _ in range(3)]
        rng.shuffle(finals)
        sols = [f"{a} + {b} + {d} = {c}. The answer is {f}." for f in finals]
        s = rm.score([(q, x) for x in sols]).tolist()
        groups.append({"scores": s, "correct": [f == c for f in finals], "answers": [str(f) for f in finals]})
    r = reward_metrics.best_of_n(groups)
    print(f"best-of-4: RM {r['best_of_n']:.3f} | majority {r['majority']:.3f} | random {r['random']:.3f}")
    assert r["random"] == pytest.approx(0.25)
    assert r["best_of_n"] > r["random"] + 0.15


def test_process_rm_learns_step_labels(tmp_path, tok, dist_cleanup):
    rows = toydata.prm_records(600, seed=2)
    cfg = RMConfig(rm_type="process", train_data=[_write(tmp_path / "tr.jsonl", rows[:500])],
                   valid_data=[_write(tmp_path / "va.jsonl", rows[500:])])
    t, m = _configs(tok, 350, 1e-3, str(tmp_path / "prm"))
    out = train_reward_model(t, m, cfg, tokenizer=tok)
    pos_rate = sum(sum(r["step_labels"]) for r in rows[500:]) / (3 * 100)
    print(f"\nPRM held-out ({out['valid positions']} steps, majority class {max(pos_rate, 1 - pos_rate):.3f}): "
          f"acc {out['initial valid accuracy']:.3f} -> {out['valid accuracy']:.3f}, "
          f"AUC {out['initial valid auc']:.3f} -> {out['valid auc']:.3f}; train loss {out['rm loss']:.4f}")
    assert out["valid positions"] == 300
    assert out["rm loss"] < 0.5
    assert out["valid accuracy"] >= max(pos_rate, 1 - pos_rate) + 0.05
    assert out["valid auc"] >= 0.8 and out["valid auc"] > out["initial valid auc"] + 0.05

    rm = RewardModel.from_checkpoint(str(tmp_path / "prm"), tok)
    q = rows[500]["question"]
    per = rm.score_steps([(q, "\n\n".join(rows[500]["steps"]))])
    assert per[0].shape == (3,)
    assert float(rm.score([(q, "\n\n".join(rows[500]["steps"]))])[0]) == pytest.approx(float(per[0].min()))


def test_rm_starts_from_a_language_model_checkpoint(tmp_path, tok, dist_cleanup, capsys):
    """--load of an LM checkpoint: backbone weights loaded, head initialised."""
    from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config
    from megatron_dsm import checkpoint as checkpointing
    import dataclasses

    cfg = RMConfig(rm_type="outcome", train_data=[_write(tmp_path / "tr.jsonl", toydata.orm_records(32, seed=4))])
    t, m = _configs(tok, 1, 1e-9, str(tmp_path / "rm"))
    platform.initialize_distributed(seed=0)
    lm = build_model(m, transformer_config(m))
    layout_independent_init(lm, 77, 0.05, m.num_layers)
    checkpointing.save_checkpoint(str(tmp_path / "lm"), 5, lm, None, {"model_config": dataclasses.asdict(m)})
    t = dataclasses.replace(t, load=str(tmp_path / "lm"), log_interval=1)
    train_reward_model(t, m, cfg, tokenizer=tok)
    assert "loaded backbone from" in capsys.readouterr().out
    rm = RewardModel.from_checkpoint(str(tmp_path / "rm"), tok)
    lm_sd, rm_sd = lm.state_dict(), rm.model.state_dict()
    w = "decoder.layers.0.self_attention.linear_qkv.weight"
    # lr 1e-9 for one step: the backbone is the LM's weights
    assert torch.allclose(rm_sd[w], lm_sd[w], atol=1e-6)


def test_cli_one_line_error_for_unlabelled_record(tmp_path, repo_root):
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "solution": "s"}) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("MASTER_ADDR", None), env.pop("MASTER_PORT", None)
    p = subprocess.run([sys.executable, str(repo_root / "tools" / "train_reward_model.py"), "--train-data", str(bad),
                        "--tokenizer-type", "byte", "--train-iters", "1"], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr[-2000:]
    assert "bad.jsonl:1: outcome record needs 'label' or a reference 'answer'" in p.stderr
