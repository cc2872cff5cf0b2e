"""`--token-budget` counts tokens of the named tokenizer: the kept pages' own token counts sum to within 1%.

One iteration of `tools/mine_corpus.py run` over docs.jsonl of
../shared/data/web with the shared GPT-NeoX BPE tokenizer.  About 2M tokens
score above the threshold; the budget of 1M tokens keeps the top-ranked half.
The check re-tokenizes every kept page with the tokenizer itself.  The largest
candidate page has 7.6K tokens, under 1% of the budget, which is what bounds
the shortfall of a top-ranked prefix.  The same run with a 20% token sample
(the other candidates estimated from their length) is held to the same 1%.
"""

import json
import shutil
import subprocess
import sys

import pytest

from megatron_dsm.data.tokenizer import build_tokenizer

BUDGET = 1_000_000
TOKENIZER = "tokenizers/olmo_gpt-neox-20b_bytelevel_bpe"


@pytest.fixture(scope="module")
def web(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    docs = [json.loads(x) for x in open(shared_data / "web" / "docs.jsonl")]
    for name, keep in (("seed", lambda r: r["domain"] == "math.stackexchange.com"),
                       ("neg", lambda r: r["label"] == "non_math")):
        with open(tmp / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in docs if keep(r))
    return tmp


def _run(repo_root, shared_data, web, out, *extra):
    cmd = [sys.executable, str(repo_root / "tools" / "mine_corpus.py"), "run",
           "--input", str(shared_data / "web" / "docs.jsonl"), "--seed-positives", str(web / "seed.jsonl"),
           "--negatives", str(web / "neg.jsonl"), "--output", str(out), "--max-iterations", "1",
           "--dim", "64", "--bucket", "50000", "--compression", "none", "--no-dedup",
           "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(shared_data / TOKENIZER),
           "--token-budget", str(BUDGET), *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "report.json").read_text())
    texts = [json.loads(x)["text"] for p in sorted((out / "final").glob("*.jsonl")) for x in open(p)]
    return report, texts


def test_token_budget_in_tokenizer_tokens_exact_and_sampled(repo_root, shared_data, web):
    tok = build_tokenizer("HuggingFaceTokenizer", shared_data / TOKENIZER)
    report, texts = _run(repo_root, shared_data, web, web / "exact")
    it = report["iterations"][0]
    own = sum(len(tok.encode(t)) for t in texts)
    assert report["tokenizer"]["fingerprint"] == tok.fingerprint
    assert it["token_budget"] == BUDGET and it["token_count"]["method"] == "exact"
    assert it["tokens_collected"] == own  # the counts used are the tokenizer's own
    print(f"exact: {own} tokens for a budget of {BUDGET}")
    assert 0.99 * BUDGET <= own <= BUDGET, own
    assert len(texts) == it["pages_collected"] and 800 < len(texts) < 2000

    # sampled: reuse the extracted pages and the classifier, so only scoring and selection run again
    (web / "sampled" / "iter_01").mkdir(parents=True)
    shutil.copytree(web / "exact" / "pages", web / "sampled" / "pages")
    for f in ("model.bin", "classifier.json"):
        shutil.copy(web / "exact" / "iter_01" / f, web / "sampled" / "iter_01" / f)
    report, texts = _run(repo_root, shared_data, web, web / "sampled", "--token-sample-rate", "0.2")
    count = report["iterations"][0]["token_count"]
    assert count["method"] == "sampled" and report["tokenizer"]["sample_rate"] == 0.2
    share = count["pages_counted"] / (count["pages_counted"] + count["pages_estimated"])
    assert 0.15 < share < 0.25
    own = sum(len(tok.encode(t)) for t in texts)
    print(f"sampled: {own} tokens for a budget of {BUDGET}")
    assert abs(own - BUDGET) <= 0.01 * BUDGET, own
