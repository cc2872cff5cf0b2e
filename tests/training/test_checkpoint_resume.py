"""Exact resume, crash consistency during a save, resharding across
layouts, and --finetune semantics."""
import os

import pytest

from launch import common_args, read_metrics, run_pretrain


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    args = common_args(corpus, **{"--train-iters": "20", "--save": str(d / "ckpt"),
                                  "--save-interval": "10", "--log-json": str(d / "m.jsonl")})
    run_pretrain(args)
    return d, read_metrics(d / "m.jsonl")


def test_resume_is_bitwise(full_run, corpus, tmp_path):
    d, first = full_run
    assert (d / "ckpt" / "iter_0000010" / "metadata.json").is_file()
    assert (d / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "20"
    out = tmp_path / "m.jsonl"
    run_pretrain(common_args(corpus, **{"--train-iters": "20", "--log-json": str(out),
                                        "--load": str(d / "ckpt" / "iter_0000010")}))
    second = read_metrics(out)
    assert sorted(second) == list(range(11, 21))
    for it in range(11, 21):
        assert second[it]["lm loss"] == first[it]["lm loss"], it  # bitwise on CPU
        assert second[it]["learning rate"] == first[it]["learning rate"]
        assert second[it]["consumed samples"] == first[it]["consumed samples"]


@pytest.mark.multiproc
def test_resume_is_bitwise_with_the_distributed_optimizer(corpus, tmp_path):
    """DP=2, megatron-core's DistributedOptimizer: each rank saves and
    restores its shard of the fp32 state (fully reshardable layout)."""
    args = common_args(corpus, **{"--train-iters": "6", "--save": str(tmp_path / "ckpt"),
                                  "--save-interval": "3", "--log-json": str(tmp_path / "a.jsonl")})
    run_pretrain(args + ["--use-distributed-optimizer"], nproc=2)
    first = read_metrics(tmp_path / "a.jsonl")
    run_pretrain(common_args(corpus, **{"--train-iters": "6", "--log-json": str(tmp_path / "b.jsonl"),
                                        "--load": str(tmp_path / "ckpt" / "iter_0000003")})
                 + ["--use-distributed-optimizer"], nproc=2)
    second = read_metrics(tmp_path / "b.jsonl")
    assert sorted(second) == [4, 5, 6]
    for it in range(4, 7):
        assert second[it]["lm loss"] == first[it]["lm loss"], it  # bitwise on CPU
        assert second[it]["grad norm"] == first[it]["grad norm"], it
    assert first[6]["lm loss"] < first[1]["lm loss"]


def test_kill_during_save_keeps_previous_checkpoint(corpus, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = common_args(corpus, **{"--train-iters": "10", "--save": str(ckpt),
                                  "--save-interval": "5"})
    p = run_pretrain(args, env={"DSM_FAULT_INJECT": "kill_during_save:10"}, check=False)
    assert p.returncode != 0  # SIGKILLed inside the save of iteration 10
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "5"
    assert (ckpt / "iter_0000010.tmp").is_dir() and not (ckpt / "iter_0000010").exists()
    out = tmp_path / "m.jsonl"
    run_pretrain(args + ["--load", str(ckpt), "--log-json", str(out)])
    m = read_metrics(out)
    assert min(m) == 6 and max(m) == 10  # resumed from 5, not from the partial 10
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "10"
    assert not (ckpt / "iter_0000010.tmp").exists()


@pytest.mark.multiproc
@pytest.mark.parametrize("layout", [["--tensor-model-parallel-size", "2"],
                                    ["--pipeline-model-parallel-size", "2"]])
def test_checkpoint_loads_at_another_layout(full_run, corpus, tmp_path, layout):
    d, first = full_run
    out = tmp_path / "m.jsonl"
    # same --train-iters as the first run (the LR schedule depends on it); stop at 12
    run_pretrain(common_args(corpus, **{"--train-iters": "20", "--exit-interval": "12",
                                        "--log-json": str(out),
                                        "--load": str(d / "ckpt" / "iter_0000010")}) + layout,
                 nproc=2)
    m = read_metrics(out)
    assert sorted(m) == [11, 12]
    for it in (11, 12):
        assert abs(m[it]["lm loss"] - first[it]["lm loss"]) / first[it]["lm loss"] < 1e-4


def test_finetune_loads_weights_only(full_run, corpus, tmp_path):
    d, first = full_run
    out = tmp_path / "m.jsonl"
    run_pretrain(common_args(corpus, **{"--train-iters": "2", "--log-json": str(out),
                                        "--load": str(d / "ckpt"), "--finetune": "true"}))
    m = read_metrics(out)
    assert sorted(m) == [1, 2]  # iteration reset
    # starts from trained weights: far below the from-scratch first loss
    assert m[1]["lm loss"] < 0.8 * first[1]["lm loss"]
