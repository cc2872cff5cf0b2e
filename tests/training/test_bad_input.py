"""Each bad input is one clear line before training starts, never a hang."""
import json

import numpy as np
import pytest

from launch import common_args, run_pretrain


def _err(p):
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert "iteration" not in p.stdout
    return lines[0]


def test_missing_prefix(tmp_path):
    p = run_pretrain(common_args(str(tmp_path / "nope"), **{"--train-iters": "2"}),
                     check=False, timeout=60)
    assert "missing" in _err(p) and "nope" in _err(p)


def test_empty_prefix(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = str(tmp_path / "empty")
    IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16).finalize(prefix + ".idx")
    p = run_pretrain(common_args(prefix, **{"--train-iters": "2"}), check=False, timeout=60)
    assert "0 tokens" in _err(p) or "empty" in _err(p)


def test_token_id_beyond_vocab(corpus):
    # the synthetic corpus uses ids < 256; a 128-token model cannot read it
    p = run_pretrain(common_args(corpus, **{"--train-iters": "2", "--vocab-size": "128"}),
                     check=False, timeout=60)
    assert ">= model vocab size 128" in _err(p)


def test_heads_not_divisible_by_tp(corpus):
    p = run_pretrain(common_args(corpus, **{"--train-iters": "2", "--num-attention-heads": "4",
                                            "--hidden-size": "96",
                                            "--tensor-model-parallel-size": "3"}),
                     env={"WORLD_SIZE": "3"}, check=False, timeout=60)
    assert "not divisible by tensor parallel size 3" in _err(p)


def test_world_not_divisible_by_tp_pp(corpus):
    p = run_pretrain(common_args(corpus, **{"--train-iters": "2",
                                            "--tensor-model-parallel-size": "2",
                                            "--pipeline-model-parallel-size": "2"}),
                     env={"WORLD_SIZE": "2"}, check=False, timeout=60)
    assert "world size 2 is not divisible by TP x PP" in _err(p)


@pytest.mark.parametrize("w", ["0", "-1"])
def test_non_positive_blend_weight(corpus, w):
    p = run_pretrain(common_args(f"{w} {corpus} 1 {corpus}", **{"--train-iters": "2"}),
                     check=False, timeout=60)
    assert "must be > 0" in _err(p)


def test_load_without_checkpoint(corpus, tmp_path):
    (tmp_path / "empty_ckpt").mkdir()
    p = run_pretrain(common_args(corpus, **{"--train-iters": "2",
                                            "--load": str(tmp_path / "empty_ckpt")}),
                     check=False, timeout=60)
    assert "no checkpoint" in _err(p)


@pytest.mark.parametrize("flag, words", [("--bf16", "--bf16 needs a CUDA GPU"),
                                         ("--use-te", "--use-te: transformer_engine does not import")])
def test_gpu_only_settings_on_cpu(corpus, flag, words):
    # megatron-core would fail later with a traceback (the bf16 optimizer
    # rejects CPU tensors; the TE spec cannot import)
    p = run_pretrain(common_args(corpus, **{"--train-iters": "2", flag: "true"}), check=False, timeout=60)
    assert words in _err(p)


@pytest.mark.parametrize("kw, words", [
    (dict(recompute_granularity="full"), "--recompute-granularity full needs --recompute-method"),
    (dict(recompute_granularity="full", recompute_method="block"), "needs --recompute-method"),
    (dict(recompute_method="uniform", recompute_num_layers=1), "need --recompute-granularity full"),
    (dict(recompute_granularity="selective", recompute_num_layers=2), "selective takes no"),
    (dict(recompute_granularity="fast"), "recompute_granularity"),
])
def test_recompute_options_checked_before_anything_runs(kw, words):
    from megatron_dsm.config import ConfigError
    from megatron_dsm.training.arguments import TrainConfig

    with pytest.raises(ConfigError, match=words):
        TrainConfig(**kw)


def test_recompute_layers_beyond_a_pipeline_stage(corpus):
    p = run_pretrain(common_args(corpus, **{"--train-iters": "2", "--recompute-granularity": "full",
                                            "--recompute-method": "block",
                                            "--recompute-num-layers": "5"}),
                     check=False, timeout=60)
    assert "--recompute-num-layers 5 exceeds the 4 layers of a pipeline stage" in _err(p)


def test_recompute_options_reach_transformer_config():
    from megatron_dsm.models.config import ModelConfig
    from megatron_dsm.models.gpt import transformer_config
    from megatron_dsm.training.arguments import TrainConfig

    t = TrainConfig(recompute_granularity="full", recompute_method="block", recompute_num_layers=2)
    tc = transformer_config(ModelConfig(vocab_size=64), **t.recompute_kwargs())
    assert (tc.recompute_granularity, tc.recompute_method, tc.recompute_num_layers) == ("full", "block", 2)
    assert TrainConfig().recompute_kwargs() == {}
