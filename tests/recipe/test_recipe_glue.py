"""What the recipe measures between tools, on hand-built files: recall and
precision of mining against the labels, the planted pages decontamination
cut, the reward model's records split by question, and the task's files."""

import json

import pytest

from megatron_dsm.config import ConfigError
from megatron_dsm.io import read_jsonl, write_json, write_jsonl
from megatron_dsm.recipe import glue
from megatron_dsm.recipe.metrics import train_row
from megatron_dsm.recipe.task import TaskConfig, write_task


def test_recall_metrics_against_labels(tmp_path):
    pool = [{"id": "a", "label": "math"}, {"id": "b", "label": "math"}, {"id": "c", "label": "non_math"},
            {"id": "task-page-1", "label": "math"}, {"id": "task-page-2", "label": "math"}]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": i} for i in ("a", "c", "task-page-1")])
    m = glue.recall_metrics([str(tmp_path / "pool.jsonl")], tmp_path / "corpus.jsonl")
    # 2 of the 3 recalled are math; 2 of the 4 math pages recalled; 1 of 2 task pages
    assert m == {"pages_in": 5, "math_pages_in": 4, "pages_recalled": 3, "precision": round(2 / 3, 4),
                 "recall": 0.5, "task_pages_recall": 0.5}


def test_planted_cut(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"id": "p1", "planted": "heldout"}, {"id": "p2", "planted": "gsm8k"},
                                        {"id": "p3", "planted": "gsm8k"}, {"id": "x"}])
    write_json(tmp_path / "report.json", {"documents": [{"id": "p1", "segments_removed": 2},
                                                        {"id": "p3", "dropped": True},
                                                        {"id": "x", "segments_removed": 1}]})
    m = glue.planted_cut(tmp_path / "in.jsonl", tmp_path / "report.json")
    assert m == {"planted_in": 3, "planted_cut": 2, "other_pages_cut": 1,
                 "planted": {"gsm8k": {"in": 2, "cut": 1}, "heldout": {"in": 1, "cut": 1}}}


def test_orm_records_keep_a_question_on_one_side(tmp_path):
    questions = [{"id": f"q{i}", "question": f"question {i}", "answer": str(i)} for i in range(10)]
    write_jsonl(tmp_path / "q.jsonl", questions)
    write_jsonl(tmp_path / "samples.jsonl", [{"id": f"q{i}", "completions": [f" {i}", " 0"],
                                              "correct": [True, i == 0]} for i in range(10)])
    counts = glue.orm_records(tmp_path / "samples.jsonl", str(tmp_path / "q.jsonl"), tmp_path, 0.2)
    assert counts["valid"] == 4 and counts["train"] == 16
    train = {r["question"] for _, r in read_jsonl(tmp_path / "orm_train.jsonl")}
    valid = {r["question"] for _, r in read_jsonl(tmp_path / "orm_valid.jsonl")}
    assert len(valid) == 2 and not train & valid
    labels = [r["label"] for _, r in read_jsonl(tmp_path / "orm_train.jsonl")]
    assert counts["train_correct"] == sum(labels)


def test_orm_records_leave_out_empty_completions(tmp_path):
    # an empty sample is no solution to score: the RM's data reader refuses it
    write_jsonl(tmp_path / "q.jsonl", [{"id": "q0", "question": "question 0", "answer": "1"}])
    write_jsonl(tmp_path / "samples.jsonl", [{"id": "q0", "completions": [" 1", "  ", ""],
                                              "correct": [True, False, False]}])
    counts = glue.orm_records(tmp_path / "samples.jsonl", str(tmp_path / "q.jsonl"), tmp_path, 0.5)
    assert counts["empty"] == 2 and counts["valid"] + counts["train"] == 1
    rows = [r for f in ("orm_valid", "orm_train") for _, r in read_jsonl(tmp_path / f"{f}.jsonl")]
    assert rows == [{"question": "question 0", "solution": "1", "label": 1}]


def test_task_files(tmp_path):
    cfg = TaskConfig(train_size=50, heldout_size=10, pages=6, seed_pages=2, planted_heldout=2,
                     planted_gsm8k=3, rm_questions=5)
    counts = write_task(cfg, tmp_path)
    assert counts["planted"] == {"heldout": 2, "gsm8k": 3} and counts["pages"] == 9
    train = [r["question"] for _, r in read_jsonl(tmp_path / "train.jsonl")]
    held = [r["question"] for _, r in read_jsonl(tmp_path / "heldout.jsonl")]
    assert len(train) == 50 and len(held) == 10 and not set(train) & set(held)
    pages = [r for _, r in read_jsonl(tmp_path / "pages.jsonl")]
    quoting = [p for p in pages if any(q in p["text"] for q in held)]
    assert {p["id"] for p in quoting} == {p["id"] for p in pages if p.get("planted") == "heldout"}
    assert [r["question"] for _, r in read_jsonl(tmp_path / "rm_questions.jsonl")] == train[:5]
    bench = json.loads((tmp_path / "benchmarks" / "arith_heldout" / "test.jsonl").read_text().splitlines()[0])
    assert set(bench) == {"id", "question"}
    assert (tmp_path / "benchmarks" / "gsm8k_openai" / "test.jsonl").is_file()


def test_task_reward_model_questions_default_to_all_and_are_checked(tmp_path):
    write_task(TaskConfig(train_size=20, heldout_size=5, pages=2, seed_pages=1, planted_heldout=0,
                          planted_gsm8k=0), tmp_path)
    train = [r["question"] for _, r in read_jsonl(tmp_path / "train.jsonl")]
    assert [r["question"] for _, r in read_jsonl(tmp_path / "rm_questions.jsonl")] == train
    with pytest.raises(ConfigError, match=r"rm_questions \(21\) is more than train_size \(20\)"):
        TaskConfig(train_size=20, rm_questions=21)
    with pytest.raises(ConfigError, match="at least 2"):
        TaskConfig(train_size=20, rm_questions=1)


def test_training_rows_name_the_reward_models_data_and_the_rl_reward():
    rm = train_row({"iterations": 900, "samples": 12000, "samples_correct": 0.38, "heldout_auc": 0.8091})
    assert rm == ("12,000 graded samples", "900 iterations", "held-out AUC 0.809")
    rl = train_row({"iterations": 60, "heldout_accuracy": 0.66, "loop_heldout_accuracy_end": 0.66,
                    "reward": "orm"})
    assert rl == ("", "60 iterations", "held-out accuracy 0.660; reward orm")


def test_slurm_times_stay_strings_in_recipes_and_overrides(tmp_path):
    """YAML 1.1 reads 30:00 as 1800 (base 60); a Slurm time limit must stay the
    string Slurm takes, from the file and from --set alike."""
    from megatron_dsm.recipe import schema

    f = tmp_path / "r.yaml"
    f.write_text("executor: {time: 30:00}\nstages: {mine: {time: 1:30:00, n: 20, lr: 1.5}}\n")
    tree = schema.read_tree(f, ["stages.mine.args.slurm_time=20:00", "stages.mine.k=3"])
    assert tree["executor"]["time"] == "30:00"
    assert tree["stages"]["mine"]["time"] == "1:30:00"
    assert tree["stages"]["mine"]["args"]["slurm_time"] == "20:00"
    assert (tree["stages"]["mine"]["n"], tree["stages"]["mine"]["lr"], tree["stages"]["mine"]["k"]) == (20, 1.5, 3)


def test_join_shards_in_shard_order_and_concat(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_jsonl(shards / "00001.jsonl", [{"id": "c"}])
    write_jsonl(shards / "00000.jsonl", [{"id": "a"}, {"id": "b"}])
    (shards / "notes.txt").write_text("not a shard")
    assert glue.join_shards(shards, tmp_path / "all.jsonl") == 3
    assert [r["id"] for _, r in read_jsonl(tmp_path / "all.jsonl")] == ["a", "b", "c"]
    n = glue.concat_jsonl([str(shards / "00001.jsonl"), str(tmp_path / "all.jsonl")], tmp_path / "cat.jsonl")
    assert n == 4 and [r["id"] for _, r in read_jsonl(tmp_path / "cat.jsonl")] == ["c", "a", "b", "c"]
