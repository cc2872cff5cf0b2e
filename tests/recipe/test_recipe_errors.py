"""Bad recipes: each is one ``error: ...`` line (exit 2) naming the file and
the key, raised by the checks that run before any stage does (the run
folder is never created)."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from megatron_dsm.recipe.cli import main

REPO = Path(__file__).resolve().parents[2]


def _base(tmp: Path) -> dict:
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": f"page {i}: 2 + {i} = {2 + i}"}) + "\n"
                              for i in range(4)))
    return {"name": "bad", "output": str(tmp / "run"),
            "tokenizer": {"type": "byte"},
            "model": {"num_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "seq_length": 32},
            "stages": {"decontaminate": {"input": str(corpus), "benchmarks": str(REPO / "examples" / "data")},
                       "preprocess": {"input": "decontaminate"},
                       "pretrain": {"data": "preprocess", "args": {"train_iters": 2}}}}


def _run(tmp: Path, tree: dict, capsys, *extra: str) -> str:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    code = main(["run", "--recipe", str(path), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert not (tmp / "run").exists(), "a stage ran before the recipe was refused"
    return err


def _edit(tree: dict, dotted: str, value) -> dict:
    tree = copy.deepcopy(tree)
    node = tree
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return tree


CASES = [
    # (what, edit key, value, words the error must hold)
    ("unknown stage", "stages.pretraining", {"data": "preprocess"}, ["stages.pretraining", "unknown stage",
                                                                     "'pretrain'"]),
    ("unknown stage key", "stages.pretrain.trian_iters", 3, ["stages.pretrain", "trian_iters"]),
    ("unknown tool option", "stages.pretrain.args.train_iter", 3, ["stages.pretrain.args.train_iter",
                                                                   "unknown option", "'train_iters'"]),
    ("bad option value", "stages.pretrain.args.train_iters", "many", ["stages.pretrain.args.train_iters"]),
    ("option the recipe sets", "stages.pretrain.args.save", "/tmp/x", ["stages.pretrain.args.save",
                                                                       "set by the recipe"]),
    ("unknown model option", "model.hiden_size", 64, ["model.hiden_size", "'hidden_size'"]),
    ("unknown section", "trainer", {}, ["trainer", "unknown section"]),
    ("missing input file", "stages.decontaminate.input", "/nonexistent/corpus.jsonl",
     ["stages.decontaminate.input", "/nonexistent/corpus.jsonl", "no such file"]),
    ("input from a later stage", "stages.preprocess.input", "pretrain", ["stages.preprocess.input",
                                                                         "runs after"]),
    ("input from an absent stage", "stages.pretrain.data", "mine", ["stages.pretrain.data", "'mine'",
                                                                    "not in this recipe"]),
    ("input of the wrong kind", "stages.pretrain.data", "decontaminate", ["makes no prefix"]),
    ("task without a task section", "stages.decontaminate.benchmarks", "task", ["needs a task: section"]),
    ("several nodes locally", "stages.pretrain.nodes", 2, ["stages.pretrain.nodes", "--executor slurm"]),
    ("trained tokenizer without preprocess", "stages.preprocess", None, ["tokenizer.model"]),
]


@pytest.mark.parametrize("what,key,value,words", CASES, ids=[c[0] for c in CASES])
def test_bad_recipe_is_one_error_line(tmp_path, capsys, what, key, value, words):
    tree = _base(tmp_path)
    if what == "trained tokenizer without preprocess":
        tree["tokenizer"] = {"train_type": "bytelevel-bpe"}
        tree["stages"]["pretrain"]["data"] = str(tmp_path / "corpus.jsonl")
    err = _run(tmp_path, _edit(tree, key, value), capsys)
    assert "recipe.yaml" in err or what == "trained tokenizer without preprocess"
    for w in words:
        assert w in err, (w, err)


def test_stages_out_of_order(tmp_path, capsys):
    tree = _base(tmp_path)
    tree["stages"] = {k: tree["stages"][k] for k in ("preprocess", "decontaminate", "pretrain")}
    assert "must appear in the order decontaminate, preprocess, pretrain" in _run(tmp_path, tree, capsys)


def test_data_tokenized_with_another_tokenizer(tmp_path, capsys):
    """A data prefix whose sidecar records another tokenizer's fingerprint."""
    prefix = tmp_path / "other_text_document"
    for ext in (".bin", ".idx"):
        Path(str(prefix) + ext).write_bytes(b"")
    Path(str(prefix) + ".json").write_text(json.dumps({"tokenizer": {"fingerprint": "f" * 64}}))
    tree = _base(tmp_path)
    tree["stages"] = {"pretrain": {"data": str(prefix), "args": {"train_iters": 2}}}
    err = _run(tmp_path, tree, capsys)
    assert "stages.pretrain.data" in err and "tokenizer mismatch" in err and "ffffffffffff" in err


def test_stage_yaml_naming_another_tokenizer(tmp_path, capsys):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"tokenizer_model": "/models/other/tokenizer.json"}}))
    tree = _base(tmp_path)
    tree["stages"]["pretrain"]["config"] = str(cfg)
    err = _run(tmp_path, tree, capsys)
    assert "stages.pretrain.config" in err and "/models/other/tokenizer.json" in err
    assert "tokenizer mismatch" in err


def test_bad_override_and_bad_from(tmp_path, capsys):
    tree = _base(tmp_path)
    assert "KEY=VALUE" in _run(tmp_path, tree, capsys, "--set", "stages.pretrain.args.train_iters")
    assert "--from sft: not a stage" in _run(tmp_path, tree, capsys, "--from", "sft")


def test_missing_recipe_and_invalid_yaml(tmp_path, capsys):
    assert main(["run", "--recipe", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"error: recipe not found: {tmp_path / 'none.yaml'}"
    (tmp_path / "broken.yaml").write_text("stages: [unclosed\n")
    assert main(["run", "--recipe", str(tmp_path / "broken.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "invalid YAML" in err and len(err.splitlines()) == 1
