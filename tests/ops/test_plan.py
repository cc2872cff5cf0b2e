"""The planner: hand-computed memory figures, the training code's own rule
messages, bad input as one error line, the search order."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dsm.config import ConfigError
from megatron_dsm.models.config import preset
from megatron_dsm.planner import cli, memory, search
from megatron_dsm.planner.stages import Layout, check, load_recipe
from megatron_dsm.training.arguments import parse_args

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "configs"
BASE = str(CONFIGS / "deepseekmath_base_7b.yaml")
RL = str(CONFIGS / "deepseekmath_rl_7b.yaml")
INSTRUCT = str(CONFIGS / "deepseekmath_instruct_7b.yaml")
GiB = 1024 ** 3

# deepseek-coder-7b by hand: L=30, h=4096, f=11008, 32 heads (no GQA), vocab 102400.
H, F, L, V = 4096, 11008, 30, 102400


def test_params_per_gpu_by_hand():
    m = preset("deepseek-coder-7b")
    layer = 4 * H * H + 3 * H * F                 # QKV + out, gate/up/down; norms 2h apart
    tp4 = L * (layer // 4 + 2 * H) + 2 * V * H // 4 + H
    assert memory.stage_params(m, 4, 1) == {"all": tp4} and tp4 == 1_727_778_816
    pp2 = memory.stage_params(m, 1, 2)
    assert pp2 == {"first": 15 * (layer + 2 * H) + V * H, "last": 15 * (layer + 2 * H) + V * H + H}
    # all of it on one GPU: ModelConfig.num_parameters, the repository's one count
    assert memory.stage_params(m, 1, 1)["all"] == m.num_parameters() == 6_910_365_696


def test_states_and_distributed_optimizer():
    assert memory.state_bytes(10, bf16=True, distributed=False, dp=4) == (20, 40, 120)
    assert memory.state_bytes(10, bf16=True, distributed=True, dp=4) == (20, 40, 30)
    assert memory.state_bytes(10, bf16=False, distributed=True, dp=2) == (40, 40, 40)


def test_activation_and_kv_by_hand():
    recipe = load_recipe("pretrain", ["--config", BASE])
    m, s = recipe.model, 4096
    # per token: 4h + (2h + 2h + 3f)/TP elements of 2 bytes (no SP, fused attention)
    assert memory.layer_activation_bytes(m, recipe, 1, s, seq=s) == s * (4 * H + 4 * H + 3 * F) * 2
    assert memory.layer_activation_bytes(m, recipe, 4, s, seq=s) == s * (4 * H + (4 * H + 3 * F) // 4) * 2
    assert memory.recompute_bytes(m, recipe, 4, s) == s * H * 2
    rl = load_recipe("rl", ["--config", RL])
    facts = check(rl, Layout(4, 1, 4), 32)
    assert facts.dp == 8 and facts.rows_per_rank == 16 // 8 * 64
    est = memory.estimate(rl, Layout(4, 1, 4), facts)
    kv = dict(est.rows)["KV cache (128 rows x 2048 tokens)"]["rollout"]
    assert kv == L * 2 * 128 * 2048 * (32 // 4) * (H // 32) * 2 == 30 * GiB
    assert est.columns == ("rollout", "reference", "train")


def test_pipeline_first_stage_holds_pp_microbatches():
    recipe = load_recipe("pretrain", ["--config", BASE])
    lo = Layout(1, 2, 1)
    facts = check(recipe, lo, 8)
    est = memory.estimate(recipe, lo, facts)
    acts = next(v for name, v in est.rows if name.startswith("activations"))
    assert acts["first stage"] == 2 * acts["last stage"]
    logits = next(v for name, v in est.rows if name.startswith("logits"))
    assert logits == {"last stage": 4096 * V * 6}


def test_rule_errors_are_the_training_codes():
    base = load_recipe("pretrain", ["--config", BASE, "--tensor-model-parallel-size", "1"])
    train, _ = parse_args(["--config", BASE, "--tensor-model-parallel-size", "1"])
    with pytest.raises(ConfigError) as want:
        train.num_microbatches(train.data_parallel_size(512))
    assert "2432 is not divisible by micro batch 1 x data parallel 512" in str(want.value)
    assert search.judge(base, Layout(1, 1, 1), search.Cluster(64, 8, 80)).error == str(want.value)
    rl = load_recipe("rl", ["--config", RL])
    cluster = search.Cluster(16, 8, 80)
    assert search.judge(rl, Layout(4, 1, 4), cluster).error == \
        "prompts_per_step 16 is not divisible by the data-parallel size 32"
    assert "in-process rollouts need --pipeline-model-parallel-size 1" in \
        search.judge(rl, Layout(4, 2, 4), cluster).error
    assert "attention heads 32 are not divisible by tensor parallel size 3" in \
        search.judge(rl, Layout(3, 1, 4), search.Cluster(3, 1, 80)).error
    bad_gbs = load_recipe("rl", ["--config", RL, "--global-batch-size", "512"])
    assert "must equal B x G = 16 x 64 = 1024" in search.judge(bad_gbs, Layout(4, 1, 4), cluster).error


def test_reward_model_and_sft_rules():
    cluster = search.Cluster(1, 8, 80)
    rm = load_recipe("rm", ["--model", "deepseek-coder-7b"])
    assert search.judge(rm, Layout(4, 2, 1), cluster).error == \
        "reward models run with --pipeline-model-parallel-size 1 (scoring is in process)"
    v = search.judge(rm, Layout(4, 1, 1), cluster)
    # the value head (h + 1) replaces the output layer; no vocabulary logits
    assert v.estimate.params == memory.stage_params(rm.model, 4, 1)["all"] - V * H // 4 + H + 1
    assert not any(name.startswith("logits") for name, _ in v.estimate.rows)
    sft = load_recipe("sft", ["--config", INSTRUCT, "--micro-batch-size", "2"])
    assert search.judge(sft, Layout(4, 1, 2), cluster).error == \
        "packed attention 'thd' needs --micro-batch-size 1"
    masked = load_recipe("sft", ["--config", INSTRUCT, "--packed-attention", "mask"])
    assert search.judge(masked, Layout(4, 1, 2), cluster).error is None


def test_grpo_refuses_pipeline_parallel_before_building():
    argv = ["--pipeline-model-parallel-size", "2", "--global-batch-size", "64", "--vocab-size", "259"]
    p = subprocess.run([sys.executable, "tools/grpo.py", *argv], cwd=REPO, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert p.returncode == 2
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("error:")] == \
        ["error: in-process rollouts need --pipeline-model-parallel-size 1, got 2"]


def test_search_order():
    given = Layout(4, 1, 4)
    assert search.tp_order(given, search.Cluster(1, 8, 80)) == [4, 8, 2, 1]
    assert search.feature_order(False, given) == [(False, False, False), (True, False, False),
                                                  (False, True, False), (True, True, False)]
    asked = search.feature_order(True, Layout(4, 1, 4, distributed_optimizer=True))
    assert all(dist for dist, _, _ in asked) and asked[0] == (True, False, False)
    # RL on one node: at TP=4 (DP=2) 512 responses per rank need a KV cache of
    # 120 GiB.  With vLLM at its own TP=4 the KV cache does not depend on the
    # training TP, but training TP=1 (DP=8, 128 rows per rank in 30 GiB) does
    # not fit even with the optimizer sharded: the recipe's ORM keeps its bf16
    # weights (12.09 GiB) beside the policy, 79.3 GiB in training.  Recompute
    # does not bring it under 72 GiB either, so the search samples 128 rows at
    # a time at TP=4.
    rl = load_recipe("rl", ["--config", RL])
    found = search.first_fit(rl, given, search.Cluster(1, 8, 80))
    assert found.layout == Layout(4, 1, 4, rollout_batch=128) and found.fits
    # the megatron engine: the KV cache at the training TP, so TP=4 with 128 rows at a time
    megatron = load_recipe("rl", ["--config", RL, "--rollout-engine", "megatron"])
    found = search.first_fit(megatron, given, search.Cluster(1, 8, 80))
    assert found.layout == Layout(4, 1, 4, rollout_batch=128) and found.fits


def test_rollout_memory_rows():
    """vLLM's own weights and TP, the training state parked during rollouts,
    and a KV-cache budget, by hand (TP=4, 4 nodes: 128 rows per rank)."""
    def rows(*extra):
        rl = load_recipe("rl", ["--config", RL, *extra])
        est = memory.estimate(rl, Layout(4, 1, 4), check(rl, Layout(4, 1, 4), 32))
        return dict(est.rows)

    r = rows()
    params = load_recipe("rl", ["--config", RL]).model.num_parameters(4)
    assert r["vLLM weights (bf16, vLLM TP=4; freed outside rollouts)"] == {"rollout": params * 2 // 4}
    grads = r["policy gradients (fp32 buffer; off the GPU in rollout)"]
    assert "rollout" not in grads and grads["train"] == stage_params_all(4) * 4
    r = rows("--no-offload-training-state", "--rollout-engine", "megatron")
    assert r["policy gradients (fp32 buffer)"]["rollout"] == stage_params_all(4) * 4
    assert not any(k.startswith("vLLM") for k in r)
    r = rows("--vllm-tensor-parallel-size", "1", "--rollout-kv-cache-gib", "20")
    assert r["vLLM weights (bf16, vLLM TP=1; freed outside rollouts)"] == {"rollout": params * 2}
    # at vLLM TP=1 the 128 rows would need 4 x 30 GiB: the 20 GiB budget caps it
    assert r["KV cache (128 rows x 2048 tokens, at most the 20 GiB budget)"] == {"rollout": 20 * GiB}


def stage_params_all(tp: int) -> int:
    return memory.stage_params(load_recipe("rl", ["--config", RL]).model, tp, 1)["all"]


def test_planner_reads_the_training_options():
    """The distributed optimizer and recompute are the stage tool's own
    flags (and YAML keys): the planner models what the run would do."""
    text, code = cli.plan(["--config", BASE, "--nodes", "4", "--recompute-granularity", "full",
                           "--recompute-method", "uniform", "--recompute-num-layers", "1"])
    assert code == 0
    assert "optimizer (fp32 master + Adam m, v, sharded over DP=8)" in text   # the YAML's
    assert "full recompute: layer inputs + 1 layer" in text
    assert "modelled by the planner" not in text
    off = cli.plan(["--config", BASE, "--nodes", "4", "--use-distributed-optimizer", "false"])[0]
    assert "distributed optimizer off" in off and "sharded over DP" not in off
    assert "distributed optimizer on" in text


def test_recompute_methods_by_hand():
    recipe = load_recipe("pretrain", ["--config", BASE])
    s, layers = 4096, 30
    full = memory.layer_activation_bytes(recipe.model, recipe, 4, s, seq=s)
    inp = memory.recompute_bytes(recipe.model, recipe, 4, s)
    lo = Layout(4, 1, 1, recompute=True, recompute_method="uniform", recompute_num_layers=3)
    assert memory.activation_bytes(recipe, lo, 2) == 2 * 10 * inp + 3 * full
    lo = Layout(4, 1, 1, recompute=True, recompute_method="block", recompute_num_layers=20)
    assert memory.activation_bytes(recipe, lo, 1) == 20 * inp + 10 * full + full
    assert memory.activation_bytes(recipe, Layout(4, 1, 1), 1) == layers * full
    # the stage's own rule: no more recomputed layers than a stage holds
    with pytest.raises(ConfigError, match="exceeds the 15 layers of a pipeline stage"):
        check(recipe, Layout(4, 2, 1, recompute=True, recompute_method="block",
                             recompute_num_layers=20), 64)
    assert Layout(4, 1, 1, True, True, None, "block", 20).flags()[-6:] == [
        "--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "20"]


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert cli.main(["--config", BASE, "--nodes", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: --nodes must be >= 1, got 0"]
    assert cli.main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: config file not found")
    assert cli.main(["--config", RL, "--nodes", "4", "--rollout-batch", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: rl: rollout_batch must be >= 1, got 0"]
    assert cli.main(["--config", RL, "--nodes", "4", "--rollout-batch", "1000"]) == 1
    assert "rollout batch 1000 must be between 1 and the 128 responses per rank" in capsys.readouterr().out
    for flag in (["--no-such-flag"], ["--rollout-batch", "8"]):   # a flag the stage does not know
        with pytest.raises(SystemExit) as e:
            cli.main(["--config", BASE, *flag])
        assert e.value.code == 2


def test_cluster_from_env():
    assert cli.cluster_from_env({"NNODES": "4", "NPROC": "8"}) == {"nodes": 4, "gpus_per_node": 8}
    assert cli.cluster_from_env({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}) == \
        {"nodes": 2, "gpus_per_node": 8}
    with pytest.raises(ConfigError):
        cli.cluster_from_env({"NNODES": "four"})


def test_tool_dry_run_builds_nothing(tmp_path):
    save = tmp_path / "ckpt"
    env = dict(os.environ, NNODES="64", NPROC="8", PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "tools/pretrain.py", "--config", BASE, "--save", str(save),
                        "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "layout: TP=4 PP=1 DP=128 | micro batch 1 x 19 micro-batches" in p.stdout
    assert p.stdout.splitlines()[-1] == "plan: fits (TP=4 PP=1 DP=128)"
    assert not save.exists()
