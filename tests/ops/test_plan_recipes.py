"""The three 7B recipes at 1, 4 and 16 nodes of 8 x 80 GB: a table per run,
and exit 0 for the recipe's layout or, when it does not fit, for the layout
the planner names (run again with the flags it prints).  No model is built."""
import re
from pathlib import Path

import pytest

from megatron_dsm.planner import cli

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"
RECIPES = ("deepseekmath_base_7b.yaml", "deepseekmath_instruct_7b.yaml", "deepseekmath_rl_7b.yaml")

# What each run must give: None when the recipe fits as it is, else the
# layout named (its flags).  Hand-checked: RL at 1 node has 512 responses
# per rank (KV cache 120 GiB at TP=4); training TP=1 (DP=8, 128 rows per
# rank, their KV cache 30 GiB at vLLM's own TP=4) fits with the optimizer
# sharded and micro batch 2 (test_plan.py::test_search_order has the
# numbers); at 16 nodes DP=32 does not divide the 16 questions per step,
# TP=8 gives DP=16.
EXPECTED = {
    ("deepseekmath_base_7b.yaml", 1): None, ("deepseekmath_base_7b.yaml", 4): None,
    ("deepseekmath_base_7b.yaml", 16): None,
    ("deepseekmath_instruct_7b.yaml", 1): None, ("deepseekmath_instruct_7b.yaml", 4): None,
    ("deepseekmath_instruct_7b.yaml", 16): None,
    ("deepseekmath_rl_7b.yaml", 1): "--tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 "
                                    "--micro-batch-size 2 --use-distributed-optimizer",
    ("deepseekmath_rl_7b.yaml", 4): None,
    ("deepseekmath_rl_7b.yaml", 16): "--tensor-model-parallel-size 8 --pipeline-model-parallel-size 1 "
                                     "--micro-batch-size 4",
}


def _cluster(nodes):
    return ["--nodes", str(nodes), "--gpus-per-node", "8", "--gpu-memory", "80"]


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("nodes", (1, 4, 16))
def test_recipe_plan(recipe, nodes):
    argv = ["--config", str(CONFIGS / recipe)] + _cluster(nodes)
    text, code = cli.plan(argv)
    assert "memory per GPU (GiB)" in text and "\n  total " in text
    if recipe.startswith("deepseekmath_rl"):
        assert re.search(r"KV cache \(\d+ rows x 2048 tokens\)", text)
    named = EXPECTED[(recipe, nodes)]
    if named is None:
        assert code == 0 and text.splitlines()[-1].startswith("plan: fits"), text
        return
    assert code == 1
    final = text.splitlines()[-1]
    assert final.endswith(f"(run with: {named})"), final
    text, code = cli.plan(argv + named.split())
    assert code == 0 and text.splitlines()[-1].startswith("plan: fits"), text
    assert re.search(r"fits: peak [\d.]+ GiB \(\w+\) of 72\.00 GiB usable", text)
