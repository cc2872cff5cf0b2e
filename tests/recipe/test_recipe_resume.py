"""A tiny recipe run for real (decontaminate -> preprocess -> pretrain, byte
tokenizer, 2 iterations): a rerun skips every finished stage in seconds;
deleting one stage's output reruns that stage and the stages after it only;
``--from`` marks a stage and its followers to run; the summary holds one
record per stage."""

import json
import shutil
import time
from pathlib import Path

import yaml

from megatron_dsm.io import read_json
from megatron_dsm.recipe import runner
from megatron_dsm.recipe.cli import main
from megatron_dsm.recipe.schema import load
from megatron_dsm.recipe.stages import Context

REPO = Path(__file__).resolve().parents[2]
STAGES = ["decontaminate", "preprocess", "pretrain"]


def _recipe(tmp: Path) -> Path:
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": f"Problem {i}. {i} apples and 3 more: {i}+3={i + 3}. "
                                                           f"So there are {i + 3} apples.\n" * 4}) + "\n"
                              for i in range(40)))
    tree = {"name": "tiny", "output": str(tmp / "run"), "tokenizer": {"type": "byte"},
            "model": {"num_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "ffn_hidden_size": 64,
                      "seq_length": 64},
            "stages": {"decontaminate": {"input": str(corpus), "benchmarks": str(REPO / "examples" / "data")},
                       "preprocess": {"input": "decontaminate", "args": {"append_eod": True}},
                       "pretrain": {"data": "preprocess",
                                    "args": {"train_iters": 2, "global_batch_size": 2, "micro_batch_size": 2,
                                             "eval_interval": 2, "eval_iters": 1, "log_interval": 1}}}}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _run_ids(run: Path) -> dict:
    return {s: read_json(run / s / "stage.json")["run_id"] for s in STAGES}


def test_rerun_skips_and_a_deleted_stage_reruns_with_its_followers(tmp_path, capsys):
    recipe, run = _recipe(tmp_path), tmp_path / "run"
    assert main(["run", "--recipe", str(recipe)]) == 0
    out = capsys.readouterr().out
    first = _run_ids(run)
    summary = read_json(run / "summary.json")
    assert [s["name"] for s in summary["stages"]] == STAGES and all(s["ok"] for s in summary["stages"])
    assert summary["stages"][2]["metrics"]["iterations"] == 2
    assert summary["stages"][1]["metrics"]["tokens"] > 0
    assert "3/3 stages done" in out

    t0 = time.perf_counter()
    assert main(["run", "--recipe", str(recipe)]) == 0
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert _run_ids(run) == first
    assert all(f"== {s}: done, skipped" in out for s in STAGES), out
    assert seconds < 30, f"a rerun of finished stages took {seconds:.1f}s"

    shutil.rmtree(run / "preprocess")
    assert main(["run", "--recipe", str(recipe)]) == 0
    out = capsys.readouterr().out
    again = _run_ids(run)
    assert "== decontaminate: done, skipped" in out
    assert again["decontaminate"] == first["decontaminate"]
    assert again["preprocess"] != first["preprocess"] and again["pretrain"] != first["pretrain"]
    assert read_json(run / "pretrain" / "stage.json")["upstream"]["preprocess"] == again["preprocess"]

    ctx = Context(load(recipe), "python")
    assert [s.state for s in runner.states(ctx)] == ["done"] * 3
    assert [s.state for s in runner.states(ctx, "preprocess")] == ["done", "stale", "stale"]
    # a changed section makes that stage and, through its new run, its followers run again
    changed = Context(load(recipe, ["stages.preprocess.args.append_eod=false"]), "python")
    assert [(s.state, s.why) for s in runner.states(changed)] == [
        ("done", ""), ("stale", "its section changed"), ("stale", "preprocess changed")]
