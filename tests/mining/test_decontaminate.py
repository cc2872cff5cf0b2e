"""Decontamination: the DeepSeekMath 10-gram rule and the short-text exact rule.

Real benchmark files (../shared/data/benchmarks) for planted GSM8K / MATH
problems; small benchmark folders written here where the expected outcome is
worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from megatron_dsm.config import ConfigError
from megatron_dsm.mining import decontaminate as dc

FILLER = [
    "Our bakery opens at dawn and sells rye bread to the neighbours.",
    "Parking is free on Sundays behind the old library building.",
    "Comments are moderated; please keep the discussion friendly.",
]


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def real(shared_data):
    index = dc.BenchmarkIndex.from_dir(shared_data / "benchmarks")
    return dc.Decontaminator(index)


@pytest.fixture(scope="module")
def gsm8k_item(shared_data):
    with open(shared_data / "benchmarks" / "gsm8k" / "test.jsonl", encoding="utf-8") as fh:
        return json.loads(fh.readline())


@pytest.fixture(scope="module")
def math_item(shared_data):
    with open(shared_data / "benchmarks" / "math" / "test.jsonl", encoding="utf-8") as fh:
        rec = json.loads(fh.readline())
    assert rec["unique_id"] == "test/algebra/1.json"
    return rec


@pytest.fixture()
def small(tmp_path):
    """A benchmark folder whose contents the tests below reason about by hand."""
    root = tmp_path / "bench"
    _jsonl(root / "math" / "test.jsonl", [
        {"unique_id": "test/x/1.json", "problem": "Compute the sum of the first ten positive odd integers please.",
         "solution": "It is $\\boxed{100}$.", "answer": "\\frac{\\sqrt{3}}{2}"},
        {"unique_id": "test/x/2.json", "problem": "Short one?", "solution": "Trivially $x^2 + 1$.",
         "answer": "x^2 + 1"},
    ])
    _jsonl(root / "gsm8k" / "test.jsonl", [
        {"id": "gsm8k-test-0", "question": "Tom has 3 apples and buys 5 more at the market today; how many now?",
         "answer": "18", "cot": "3 + 5 = <<3+5=8>>8 apples."},
    ])
    _jsonl(root / "cmath" / "test.jsonl", [
        {"grade": 1, "question": "妈咪买了3盒茶叶，一盒茶叶有6小包，一共买了多少小包茶叶？", "golden": "18"},
    ])
    return root


# ---------------------------------------------------------------- normalisation

def test_normalisation_by_hand():
    assert dc.normalize("Hello,   WORLD!\n\tx+y=3") == "hello world x y 3"
    # LaTeX spacing/sizing dropped, \dfrac read as \frac, fonts dropped, numbers kept
    assert dc.normalize(r"$\left( \dfrac{1}{2} \right)\,\quad \mathrm{cm}$ 3.14") == "frac 1 2 cm 3 14"
    assert dc.normalize(r"\leftarrow \bigcup \Big(") == "leftarrow bigcup"
    # full-width and accented letters fold; Chinese is one token per character
    assert dc.normalize("ＡＢＣ École 小明有5个") == "abc ecole 小 明 有 5 个"
    assert dc.normalize("") == "" and dc.normalize(" \n ,.; ") == ""


def test_token_offsets_point_into_original_text():
    text = "Ab, 小c\\dfrac{x}"
    s = dc.scan(text)
    spans = [text[a:b] for a, b in zip(s.starts, s.ends)]
    assert spans == ["Ab", "小", "c", "frac", "x"]
    assert [s.token(i) for i in range(len(s.starts))] == ["ab", "小", "c", "frac", "x"]


# ---------------------------------------------------------------- planted problems (real benchmarks)

def test_planted_gsm8k_verbatim_loses_exactly_its_line(real, gsm8k_item):
    q = gsm8k_item["question"]
    doc = "\n".join([FILLER[0], q, FILLER[1], FILLER[2]])
    res = real.clean(doc)
    assert res.text == "\n".join([FILLER[0], FILLER[1], FILLER[2]])
    assert res.removed == [1] and res.segments == 4
    benches = {real.index.texts[h.text_index].benchmark for h in res.hits}
    items = {real.index.texts[h.text_index].item for h in res.hits if h.rule == "ngram"}
    assert "gsm8k" in benches and "gsm8k-test-0" in items


def test_planted_gsm8k_rationale_without_calculator_annotations(real, gsm8k_item):
    cot = gsm8k_item["cot"].replace("<<16-3-4=9>>", "").replace("<<9*2=18>>", "")
    assert "<<" not in cot
    doc = FILLER[0] + "\n" + cot + "\n" + FILLER[1]
    res = real.clean(doc)
    assert res.text == FILLER[0] + "\n" + FILLER[1]


def test_planted_math_with_case_and_whitespace_changes(real, math_item):
    p = math_item["problem"]  # How many vertical asymptotes does the graph of $y=\frac{2}{x^2+x-6}$ have?
    changed = p.upper().replace("THE GRAPH", "THE\t\nGRAPH").replace(" ", "   ").replace("=", " = ")
    assert "\n" in changed  # the problem now spans two lines
    doc = "\n".join([FILLER[0], FILLER[1], changed, FILLER[2]])
    res = real.clean(doc)
    assert res.text == "\n".join([FILLER[0], FILLER[1], FILLER[2]])
    assert res.removed == [2, 3]
    assert any(real.index.texts[h.text_index].item == "test/algebra/1.json" for h in res.hits)


def test_planted_math_solution_inside_paragraph_mode(shared_data, math_item):
    cfg = dc.DecontConfig(segment="paragraph")
    core = dc.Decontaminator(dc.BenchmarkIndex.from_dir(shared_data / "benchmarks", dc.DecontConfig(
        benchmark_names=("math",))), cfg)
    para = FILLER[0] + "\n" + math_item["solution"] + "\n" + FILLER[1]
    doc = FILLER[2] + "\n\n" + para + "\n\n" + FILLER[0]
    res = core.clean(doc)
    assert res.text == FILLER[2] + "\n\n" + FILLER[0]
    assert res.removed == [1]


def test_only_nine_gram_overlaps_keep_everything(real, gsm8k_item, math_item):
    lines = []
    for text in (gsm8k_item["question"], math_item["problem"]):
        toks = dc.normalize(text).split()
        assert len(toks) >= 10
        for k in range(len(toks) - 8):  # every 9-token window, each in its own line
            lines.append("zqxj " + " ".join(toks[k:k + 9]) + " zqxj")
    doc = "\n".join(lines)
    res = real.clean(doc)
    assert res.text == doc and res.removed == [] and res.hits == []
    # control: the same material with one more token in a line is removed
    toks = dc.normalize(gsm8k_item["question"]).split()
    res = real.clean(doc + "\nzqxj " + " ".join(toks[:10]) + " zqxj")
    assert res.text == doc and res.removed == [len(lines)]


def test_ngram_never_spans_two_documents(real, gsm8k_item):
    toks = dc.normalize(gsm8k_item["question"]).split()
    a = FILLER[0] + " " + " ".join(toks[:5])
    b = " ".join(toks[5:10]) + " " + FILLER[1]
    out = real.clean_batch([a, b])
    assert [r.text for r in out] == [a, b] and not any(r.contaminated for r in out)
    assert real.clean(a + " " + b).removed == [0]  # the same tokens in one document do match


# ---------------------------------------------------------------- short texts: exact rule (hand-made benchmarks)

def test_short_answers_follow_exact_match_rule(small):
    core = dc.Decontaminator(dc.BenchmarkIndex.from_dir(small))
    lines = [
        r"$\dfrac{\sqrt 3}{2}$",  # 4 tokens == MATH answer -> removed
        r"The value is \frac{\sqrt{3}}{2} here.",  # contains it but is not it -> kept
        "18",  # GSM8K answer, 1 token < 3 -> never matched
        "X^2+1",  # 3 tokens == answer "x^2 + 1" (and the 3-token solution fragment is not a text) -> removed
        "x^2 + 1 + y",  # 4 tokens, not equal -> kept
        "Short one?",  # 2-token problem: under short_min -> kept
    ]
    res = core.clean("\n".join(lines))
    assert res.removed == [0, 3]
    assert res.text == "\n".join(lines[i] for i in (1, 2, 4, 5))
    assert {h.rule for h in res.hits} == {"exact"}
    idx = core.index
    assert idx.summary()["ignored_texts_under_short_min"] >= 3  # "18" twice (gsm8k, cmath), "Short one?"


def test_short_min_is_configurable(small):
    cfg = dc.DecontConfig(short_min=1)
    core = dc.Decontaminator(dc.BenchmarkIndex.from_dir(small, cfg), cfg)
    assert core.clean("18\nkeep this line").text == "keep this line"


def test_chinese_character_ngrams(small):
    core = dc.Decontaminator(dc.BenchmarkIndex.from_dir(small))
    q = "妈咪买了3盒茶叶，一盒茶叶有6小包，一共买了多少小包茶叶？"
    doc = "今天天气很好。\n老师说：" + q.replace("，", " , ") + "请回答。\n一盒茶叶有6小包，一。"
    res = core.clean(doc)
    # line 2 holds the question (with spacing changes); line 3 shares 9 characters only
    assert res.removed == [1]
    assert res.text == "今天天气很好。\n一盒茶叶有6小包，一。"


def test_hash_collision_is_not_a_hit(small):
    """A document n-gram whose hash is in the index but whose tokens are not
    in any benchmark must not remove anything (hits are verified)."""
    index = dc.BenchmarkIndex.from_dir(small)
    core = dc.Decontaminator(index)
    doc = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    fake = dc.ngram_hashes(dc.scan(doc).hashes, 10)
    assert len(fake) == 1
    pos = int(np.searchsorted(index.ngram_hash, fake[0]))
    index.ngram_hash = np.insert(index.ngram_hash, pos, fake[0])
    index.ngram_tok = np.insert(index.ngram_tok, pos, index.ngram_tok[0])
    index.ngram_text = np.insert(index.ngram_text, pos, index.ngram_text[0])
    index.filter[int(fake[0] >> np.uint64(64 - index.FILTER_BITS))] = True
    res = core.clean(doc)
    assert res.text == doc and not res.contaminated


def test_gsm8k_calculator_annotations_not_indexed(small):
    core = dc.Decontaminator(dc.BenchmarkIndex.from_dir(small))
    texts = {t.field: t.text for t in core.index.texts if t.benchmark == "gsm8k"}
    assert texts["cot"] == "3 + 5 = 8 apples." and texts["answer"] == "18"


# ---------------------------------------------------------------- benchmark loading, bad config

def test_all_shared_benchmarks_load(real):
    per = real.index.summary()["texts_per_benchmark"]
    for name in ("gsm8k", "math", "cmath", "mgsm_zh", "gaokao", "sat", "ocw", "mmlu_stem"):
        assert per.get(name, 0) > 0, name
    mmlu = [t for t in real.index.texts if t.benchmark == "mmlu_stem" and t.item == "0"]
    # question and the text of the correct option (B -> "4")
    assert {t.field for t in mmlu} == {"question", "option_B"}
    assert [t.text for t in mmlu if t.field == "option_B"] == ["4"]
    sat = {t.field: t.text for t in real.index.texts if t.benchmark == "sat" and t.item == "0"}
    assert sat["option_A"] == "$f(-6)=0$"


def test_bad_configuration_messages(tmp_path, small):
    with pytest.raises(ConfigError, match="benchmarks folder not found"):
        dc.load_benchmarks(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no benchmark jsonl"):
        (tmp_path / "empty").mkdir()
        dc.load_benchmarks(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unknown benchmark name"):
        dc.load_benchmarks(small, ["gsm9k"])
    with pytest.raises(ConfigError, match="short_min"):
        dc.DecontConfig(short_min=11)
    (small / "ocw").mkdir()
    (small / "ocw" / "test.jsonl").write_text('{"problem": "ok"}\n{broken\n')
    with pytest.raises(ConfigError, match=r"ocw/test.jsonl:2: invalid JSON"):
        dc.load_benchmarks(small)
