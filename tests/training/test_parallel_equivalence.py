"""TP/PP/DP give the same loss as one process, from the same seed and data
(gloo, 2 processes). Initial weights are layout-independent, the global
batch is the same, so only reduction order differs.  Activation
recomputation recomputes the very same operations: the losses are the
single process's bit for bit."""
import pytest

from launch import common_args, read_metrics, run_pretrain

LAYOUTS = {
    "TP2": ["--tensor-model-parallel-size", "2"],
    "PP2": ["--pipeline-model-parallel-size", "2"],
    "DP2": [],
    # megatron-core's DistributedOptimizer: gradients reduce-scattered, each
    # rank updates its shard of the fp32 state, parameters all-gathered
    "DP2-distributed-optimizer": ["--use-distributed-optimizer"],
}

RECOMPUTE = {
    "full": ["--recompute-granularity", "full", "--recompute-method", "uniform",
             "--recompute-num-layers", "1"],
    # core attention only: slow, as it runs the same checkpoint function as full
    "selective": pytest.param(["--recompute-granularity", "selective"], marks=pytest.mark.slow),
}


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "m.jsonl"
    run_pretrain(common_args(corpus, **{"--train-iters": "5", "--log-json": str(out)}))
    return read_metrics(out)


@pytest.mark.multiproc
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_loss_matches_single_process(layout, baseline, corpus, tmp_path):
    out = tmp_path / "m.jsonl"
    run_pretrain(common_args(corpus, **{"--train-iters": "5", "--log-json": str(out)})
                 + LAYOUTS[layout], nproc=2)
    got = read_metrics(out)
    l1, b1 = got[1]["lm loss"], baseline[1]["lm loss"]
    assert abs(l1 - b1) / b1 < 1e-4, (layout, l1, b1)
    l5, b5 = got[5]["lm loss"], baseline[5]["lm loss"]
    assert abs(l5 - b5) / b5 < 1e-3, (layout, l5, b5)
    # and it is learning, not a constant
    assert b5 < b1


@pytest.mark.parametrize("flags", RECOMPUTE.values(), ids=RECOMPUTE.keys())
def test_recompute_gives_the_same_losses(flags, baseline, corpus, tmp_path):
    out = tmp_path / "m.jsonl"
    run_pretrain(common_args(corpus, **{"--train-iters": "5", "--log-json": str(out)}) + flags)
    got = read_metrics(out)
    assert [got[i]["lm loss"] for i in range(1, 6)] == [baseline[i]["lm loss"] for i in range(1, 6)]
    assert [got[i]["grad norm"] for i in range(1, 6)] == [baseline[i]["grad norm"] for i in range(1, 6)]
