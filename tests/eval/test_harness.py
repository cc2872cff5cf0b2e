import json

import pytest

from megatron_dsm.eval import benchmarks, prompts
from megatron_dsm.eval.benchmarks import BenchmarkError, load_benchmark, register_from_config
from megatron_dsm.eval.generation import JsonlReplayGenerator, available_generators, truncate_at_stop
from megatron_dsm.eval.runner import EvalConfig, run
from megatron_dsm.eval.sandbox import execute

COUNTS = {"gsm8k": 1319, "gsm8k_openai": 1319, "math": 5000, "math500": 500, "cmath": 1098, "mgsm_zh": 250,
          "gaokao_mathqa": 351, "gaokao_mathcloze": 118, "sat": 32, "ocw": 272, "mmlu_stem": 3018}


@pytest.mark.parametrize("name,count", sorted(COUNTS.items()))
def test_every_benchmark_loads(shared_data, name, count):
    ps = load_benchmark(name, shared_data)
    assert len(ps) == count
    assert all(p.question and p.answer for p in ps)
    if benchmarks.REGISTRY[name].kind == "choice":
        assert all(set(p.answer) <= set("ABCD") and len(p.choices) >= 4 for p in ps)


def test_specific_records(shared_data):
    g = load_benchmark("gsm8k_openai", shared_data, limit=1)[0]
    assert g.answer == "18"
    m = load_benchmark("math500", shared_data, limit=1)[0]
    assert (m.subject, m.level, m.answer) == ("Precalculus", 2, r"\left( 3, \frac{\pi}{2} \right)")
    s = load_benchmark("sat", shared_data)[17]
    assert s.choices[3] == "$435(100 b)$"


def test_minif2f_says_unsupported(shared_data):
    with pytest.raises(BenchmarkError, match="formal proof checking"):
        load_benchmark("minif2f_test", shared_data)
    ps = load_benchmark("minif2f_valid", shared_data, allow_formal=True)
    assert len(ps) == 244 and ps[0].kind == "formal" and "theorem" in ps[0].meta["formal_statement"]


def test_user_jsonl_benchmark(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"q": "1+1?", "a": "2", "uid": "x1"}\n{"q": "2+2?", "a": "4", "uid": "x2"}\n')
    cfg = tmp_path / "b.yaml"
    cfg.write_text(f"benchmarks:\n  mine:\n    path: {f}\n    question_field: q\n    answer_field: a\n    id_field: uid\n")
    assert register_from_config(str(cfg)) == ["mine"]
    ps = load_benchmark("mine")
    assert [(p.id, p.answer) for p in ps] == [("x1", "2"), ("x2", "4")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "1"}\nnot json\n')
    register_from_config({"bad": {"path": str(bad), "question_field": "q", "answer_field": "a"}})
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:2: invalid JSON"):
        load_benchmark("bad")
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        load_benchmark("no_such_set")


def test_instruct_prompt_exact():
    assert prompts.instruct_prompt("What is 1+1?") == (
        "User: What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:")
    zh = prompts.instruct_prompt("1+1=?", "zh")
    assert zh.startswith("User: 1+1=?\n") and "\\boxed{}" in zh and zh.endswith("\n\nAssistant:")


def test_fewshot_exemplars_from_train_and_gradable(shared_data):
    from megatron_dsm.eval.grading import grade
    train = {json.loads(l)["unique_id"]: json.loads(l) for l in open(shared_data / "train/math/train.jsonl")}
    for ex in prompts.MATH_EXEMPLARS:
        assert train[ex["source"]]["problem"] == ex["problem"]
        assert grade(ex["solution"] + f" Final Answer: The final answer is ${ex['answer']}$. I hope it is correct.",
                     train[ex["source"]]["answer"])
    gtrain = [json.loads(l) for l in open(shared_data / "train/gsm8k/train.jsonl")]
    for ex in prompts.GSM8K_EXEMPLARS:
        row = gtrain[int(ex["source"].split("#")[1])]
        assert row["question"] == ex["question"]
        assert row["answer"].split("####")[1].strip() == ex["answer"]
    assert len(prompts.MATH_EXEMPLARS) == 4 and len(prompts.GSM8K_EXEMPLARS) == 8
    p = prompts.math_fewshot_prompt("What is $2+2$?")
    assert p.count("Problem:") == 5 and p.endswith("Problem:\nWhat is $2+2$?\n\nSolution:")
    assert prompts.gsm8k_fewshot_prompt("Q?").count("The answer is") == 8


def test_program_of_thought():
    comp = "Let me compute.\n```python\ndef solution():\n    return sum(range(1, 11))\n```\n"
    assert prompts.run_pot(comp, execute) == "55"
    assert prompts.run_pot("```python\nprint(2**10)\n```", execute) == "1024"
    assert prompts.run_pot("no code", execute) is None


def test_tool_integrated_loop():
    """A scripted model: writes code, reads the output, answers from it."""
    seen = []

    def generate(ps):
        seen.append(list(ps))
        outs = []
        for p in ps:
            if "```output" not in p:
                outs.append("I'll compute it.\n```python\nprint(17 * 23)\n```")
            else:
                got = p.split("```output\n")[-1].split("\n```")[0]
                outs.append(f"So the product is \\boxed{{{got}}}.")
        return outs

    texts = prompts.tool_integrated(["P1: ", "P2: "], generate, execute, max_rounds=3)
    assert all("```output\n391\n```" in t and t.endswith("\\boxed{391}.") for t in texts)
    assert len(seen) == 2

    def stubborn(ps):   # always writes more code: bounded by max_rounds
        return ["```python\nprint(1)\n```" for _ in ps]
    texts = prompts.tool_integrated(["P"], stubborn, execute, max_rounds=2)
    assert texts[0].count("```output") == 2


def test_generation_registry_and_stop(tmp_path):
    assert {"jsonl", "hf"} <= set(available_generators())
    assert truncate_at_stop("abc\n\nQuestion: x", ["\n\nQuestion:"]) == "abc"
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"prompt": "p", "completions": ["a", "b"]}) + "\n")
    g = JsonlReplayGenerator(str(f))
    assert g.generate(["p"], n=2) == [["a", "b"]]
    with pytest.raises(ValueError, match="3 requested"):
        g.generate(["p"], n=3)


def test_evaluate_jsonl_resume(tmp_path, shared_data):
    rows = [json.loads(l) for l in open(shared_data / "benchmarks/gsm8k/test.jsonl")][:6]
    gen = tmp_path / "gen.jsonl"
    with open(gen, "w") as f:
        for i, r in enumerate(rows):
            right = f"{r['cot']} The answer is {r['answer']}."
            wrong = f"The answer is {int(r['answer']) + 1}."
            comps = [right, wrong, right] if i % 2 == 0 else [wrong, right, wrong]
            f.write(json.dumps({"id": r["id"], "completions": comps}) + "\n")
    out = tmp_path / "out.jsonl"
    cfg = EvalConfig(benchmarks=["gsm8k"], limit=6, generations=str(gen), output=str(out),
                              n_samples=3, temperature=0.7, data_root=str(shared_data), batch_size=4)
    # simulate an interrupted run: first 2 records plus half a line
    s = run(cfg)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    s2 = run(cfg)
    assert len(out.read_text().splitlines()) == 6
    assert s == s2
    m = s["gsm8k"]
    assert m["accuracy"] == 0.5 and m["maj@k"]["3"] == 0.5
    assert m["pass@k"]["1"] == pytest.approx((3 * 2 / 3 + 3 * 1 / 3) / 6)
    assert (tmp_path / "out.jsonl.k.png").is_file()
    with pytest.raises(ValueError, match="needs --temperature"):
        EvalConfig(generations="x", n_samples=4)
