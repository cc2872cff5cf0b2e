"""The SFT stage: the overfit demo (>= 90% greedy exact match on the
training examples), a fast CLI run (loss and held-out loss fall, a
fine-tune run starts from the loaded weights), response-only loss through
the stage's forward step, pack order, and one-line errors."""
import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from megatron_dsm import platform
from megatron_dsm.data.sft import PackedSFTDataset
from megatron_dsm.training import sft
from megatron_dsm.training.arguments import TrainConfig
from megatron_dsm.models.config import ModelConfig, preset
from tests.sft.overfit import build

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_overfit_demo_exact_match(tmp_path, dist_cleanup):
    prefix, tok, convs, info = build(tmp_path, 300)
    assert info["samples"] == 300 and info["packs"] < 300        # packed several per context
    t = TrainConfig(train_iters=300, micro_batch_size=4, global_batch_size=8, lr=3e-3,
                    lr_decay_style="cosine", min_lr=3e-4, lr_warmup_iters=10, weight_decay=0.0,
                    log_interval=50, data_path=[prefix], seed=1)
    m = preset("tiny", vocab_size=tok.vocab_size, seq_length=128)
    before = sft.exact_match(platform_model(t, m), tok, convs[:20], max_new_tokens=40)
    res = sft.run_sft(t, m, sft.SFTConfig())
    em = sft.exact_match(res.trainer.model, tok, convs, max_new_tokens=40)
    print(f"\nSFT overfit: {len(convs)} examples in {info['packs']} packs, final lm loss "
          f"{res.metrics['lm loss']:.4f}, greedy exact match {em:.3f} (untrained: {before:.2f} on 20)")
    assert before == 0.0
    assert em >= 0.9


def platform_model(t, m):
    """An untrained model of the same shape (the exact-match baseline)."""
    from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config

    platform.initialize_distributed(seed=t.seed)
    model = build_model(m, transformer_config(m))
    layout_independent_init(model, t.seed, m.init_method_std, m.num_layers)
    return model


def _run_cli(args, timeout=400):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("MASTER_ADDR", None), env.pop("MASTER_PORT", None), env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, str(REPO / "tools" / "sft.py")] + args, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, start_new_session=True)


def test_cli_loss_falls_heldout_and_finetune_load(tmp_path):
    prefix, tok, _, _ = build(tmp_path, 120)
    valid, _, _, _ = build(tmp_path, 40, seed=9, name="valid", tok=tok)
    common = ["--data-path", prefix, "--vocab-size", str(tok.vocab_size), "--seq-length", "128",
              "--micro-batch-size", "4", "--global-batch-size", "8", "--lr", "3e-3",
              "--lr-decay-style", "constant", "--weight-decay", "0", "--log-interval", "1", "--seed", "2"]
    a = _run_cli(common + ["--train-iters", "30", "--valid-data-path", valid, "--eval-interval", "30",
                           "--save", str(tmp_path / "a"), "--log-json", str(tmp_path / "a.jsonl")])
    assert a.returncode == 0, a.stderr[-3000:]
    logs = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    losses = {r["iteration"]: r["lm loss"] for r in logs if "lm loss" in r}
    vals = [float(line.split("lm loss:")[1].split("|")[0]) for line in a.stdout.splitlines()
            if "validation loss" in line]
    print(f"\nSFT CLI: lm loss {losses[1]:.3f} -> {losses[30]:.3f}; held-out {vals[0]:.3f} -> {vals[-1]:.3f}")
    assert losses[30] < 0.6 * losses[1]
    assert len(vals) == 2 and vals[-1] < 0.7 * vals[0]
    assert (tmp_path / "a" / "iter_0000030").is_dir()

    # --load A --finetune: weights only; the run starts at iteration 1 from A's weights
    b = _run_cli(common + ["--train-iters", "2", "--load", str(tmp_path / "a"), "--finetune",
                           "--lr", "1e-9", "--log-json", str(tmp_path / "b.jsonl")])
    assert b.returncode == 0, b.stderr[-3000:]
    assert "finetune" in b.stdout
    first = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines() if "lm loss" in x][0]
    assert first["iteration"] == 1
    assert first["lm loss"] < 0.6 * losses[1]     # a fresh init would start near losses[1]


def test_response_only_loss_through_the_stage_forward_step(tmp_path, dist_cleanup):
    from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config

    prefix, tok, _, _ = build(tmp_path, 12)
    ds = PackedSFTDataset(prefix)
    platform.initialize_distributed(seed=3)
    m = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=176,
                    vocab_size=tok.vocab_size, seq_length=128)
    model = build_model(m, transformer_config(m))
    layout_independent_init(model, 4, 0.2, 2)
    batch = sft.collate([ds[0], ds[1]])
    mask = batch["loss_mask"]
    assert 0 < mask.sum() < mask.numel() and batch["attention_mask"].shape == (2, 1, 128, 128)
    step = sft.make_forward_step(use_thd=False)

    def loss_and_grads(labels):
        model.zero_grad()
        out, loss_func = step(iter([dict(batch, labels=labels)]), model)
        loss, _, metrics = loss_func(out)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    base, g0 = loss_and_grads(batch["labels"])
    changed = batch["labels"].clone()
    prompt = mask == 0
    changed[prompt] = (changed[prompt] + 7) % tok.vocab_size
    loss2, g2 = loss_and_grads(changed)
    assert torch.equal(base, loss2) and all(torch.equal(g0[k], g2[k]) for k in g0)
    resp = batch["labels"].clone()
    k = tuple(torch.nonzero(mask)[0].tolist())
    resp[k] = (resp[k] + 1) % tok.vocab_size
    assert not torch.equal(loss_and_grads(resp)[0], base)


def test_pack_order_epochs_and_data_parallel_shares():
    o = sft.PackOrder(10, global_batch=4, micro_batch=1, dp_rank=0, dp_size=2, seed=5)
    seen = [i for _ in range(5) for mb in [o.next_global_batch()] for i in mb]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != seen[10:20]                       # a new permutation per epoch
    r0 = sft.PackOrder(10, global_batch=4, micro_batch=1, dp_rank=0, dp_size=2, seed=5).microbatches()
    r1 = sft.PackOrder(10, global_batch=4, micro_batch=1, dp_rank=1, dp_size=2, seed=5).microbatches()
    assert [i for mb in r0 + r1 for i in mb] == seen[:4]  # ranks split the global batch
    resumed = sft.PackOrder(10, global_batch=4, micro_batch=1, dp_rank=0, dp_size=1, seed=5,
                            consumed_samples=8)
    assert resumed.next_global_batch() == seen[8:12]      # resume continues the order


def test_bad_input_is_one_line(tmp_path):
    p = _run_cli(["--data-path", str(tmp_path / "missing"), "--train-iters", "1"])
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "missing.json not found" in p.stderr
    prefix, tok, _, _ = build(tmp_path, 6)
    p = _run_cli(["--data-path", prefix, "--seq-length", "64", "--vocab-size", "512", "--train-iters", "1"])
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "packs are 128 tokens but the model's --seq-length is 64" in p.stderr


def test_instruct_recipe_is_the_papers():
    """DeepSeekMath-Instruct (Sec. 3.1): 500 steps, batch 256, constant lr 5e-5, 4K context."""
    from megatron_dsm.training.arguments import parse_args

    t, m, s = parse_args(["--config", str(REPO / "examples" / "configs" / "deepseekmath_instruct_7b.yaml"),
                          "--data-path", "packed"], extra=sft.SFTConfig)
    assert (t.train_iters, t.global_batch_size, t.lr, t.lr_decay_style, t.lr_warmup_iters) == \
        (500, 256, 5e-5, "constant", 0)
    assert m.seq_length == 4096 and t.model == "deepseek-coder-7b"
    assert s.packed_attention == "auto"
