"""Two-iteration local mining run over ../shared/data/web (docs.jsonl + WARC/WET files).

Seed positives: the math.stackexchange.com documents of docs.jsonl (the
stand-in for OpenWebMath); negatives: its non_math documents.  The pool is
every page of docs.jsonl plus the real WARC/WET files, deduplicated first
(URL, exact, MinHash, as the defaults do), so MathOverflow has to be
*discovered* as a math domain.  Small classifier (dim 64) and plain jsonl
output keep the run short; the logic is the one the defaults use.
"""

import csv
import json

import pytest

from megatron_dsm.config import ConfigError
from megatron_dsm.mining.classifier import ClassifierConfig
from megatron_dsm.mining.iterate import MiningConfig, MiningRun
from megatron_dsm.mining.pipeline import ExecutorConfig, jsonl_writer, make_executor


@pytest.fixture(scope="module")
def mined(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mining")
    docs = [json.loads(x) for x in open(shared_data / "web" / "docs.jsonl")]
    with open(tmp / "seed.jsonl", "w") as f:
        for r in docs:
            if r["domain"] == "math.stackexchange.com":
                f.write(json.dumps({"id": r["id"], "text": r["text"]}) + "\n")
    with open(tmp / "neg.jsonl", "w") as f:
        for r in docs:
            if r["label"] == "non_math":
                f.write(json.dumps({"id": r["id"], "text": r["text"]}) + "\n")
    cfg = MiningConfig(input=[str(shared_data / "web")], seed_positives=str(tmp / "seed.jsonl"),
                       negatives=str(tmp / "neg.jsonl"), output=str(tmp / "run"), max_iterations=2,
                       auto_accept_fraction=0.5, domain_min_pages=3, stop_overlap=1.0)
    logs: list[str] = []
    run = MiningRun(cfg, ClassifierConfig(dim=64, bucket=50000), ExecutorConfig(compression="none"), logs.append)
    reports = run.run()
    return tmp / "run", reports, logs, run, len(docs)


def test_two_iterations_report(mined):
    root, reports, logs, _, n_docs = mined
    assert [r["iteration"] for r in reports] == [1, 2]
    saved = json.loads((root / "report.json").read_text())["iterations"]
    assert saved == reports
    # docs.jsonl + the 43 HTML/WET pages of the WARC files, less what dedup removed before recall: the WET copy
    # of a WARC page and two more captures of https://allenai.org/ (URL), a MathOverflow repost of a
    # math.stackexchange question (Jaccard 0.78) and a ballads search page differing in its query (0.98)
    dedup = json.loads((root / "report.json").read_text())["dedup"]
    assert dedup["pages_in"] == n_docs + 43 and dedup["removed"] == {"url": 3, "exact": 0, "near": 2}
    assert json.loads((root / "report.json").read_text())["tokenizer"]["kind"] == "byte"
    for r in reports:
        assert r["pages_scored"] == dedup["pages_out"] == n_docs + 43 - 5
        assert r["token_count"] == {"method": "exact", "pages_counted": r["pages_collected"]}
        assert 1400 <= r["pages_collected"] <= r["pages_scored"]
        assert r["tokens_collected"] > 100 * r["pages_collected"]
        assert r["classifier"]["f1"] >= 0.8 and r["positives"] >= 790
        assert r["accepted_prefixes"] >= 1
    assert reports[0]["overlap_with_previous"] is None
    assert 0.5 < reports[1]["overlap_with_previous"] <= 1.0
    assert {"math.stackexchange.com", "mathoverflow.net"} <= set(reports[0]["new_domains"])
    assert reports[1]["positives"] == 790 + reports[0]["expansion_pages"]  # expansion joined the seed
    table = [ln for ln in logs if ln.lstrip().startswith("iter")][-1]
    assert "overlap" in table and "clf_f1" in table


def test_domain_table_and_annotation_tsv(mined):
    root = mined[0]
    with open(root / "iter_01" / "domains.tsv") as f:
        doms = {r["domain"]: r for r in csv.DictReader(f, delimiter="\t")}
    for d in ("math.stackexchange.com", "mathoverflow.net"):
        assert doms[d]["math_related"] == "1" and float(doms[d]["recalled_fraction"]) > 0.9
    assert int(doms["mathoverflow.net"]["pages"]) == 668  # all pages of the domain, recalled or not (669 - a repost)
    assert doms["an.wikipedia.org"]["math_related"] == "0"  # the WARC/WET pages are grouped too
    assert int(doms["an.wikipedia.org"]["pages"]) == 3  # 4 captures; the WET copy of a WARC page: URL duplicate
    with open(root / "iter_01" / "url_paths.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert list(rows[0]) == ["domain", "prefix", "depth", "pages", "recalled", "recalled_fraction", "sample_urls",
                             "sample_titles", "accept"]
    mo = {r["prefix"]: r for r in rows if r["domain"] == "mathoverflow.net"}
    q = mo["/questions/"]
    assert q["depth"] == "1" and int(q["pages"]) == 668 and q["accept"] == "yes"
    assert q["sample_urls"].startswith("https://mathoverflow.net/questions/")
    assert len(q["sample_urls"].split(" | ")) == 3 and q["sample_titles"]
    assert all(r["domain"] in {d for d, v in doms.items() if v["math_related"] == "1"} for r in rows)
    assert all((r["accept"] == "yes") == (float(r["recalled_fraction"]) >= 0.5) for r in rows)


def test_collection_shards_are_plain_jsonl_with_scores(mined):
    root, reports = mined[0], mined[1]
    shards = sorted((root / "iter_02" / "recalled").glob("*.jsonl"))
    assert shards and not list(root.glob("**/*.partial"))
    recs = [json.loads(x) for s in shards for x in open(s)]
    assert len(recs) == reports[1]["pages_collected"]
    assert all(isinstance(r["text"], str) and r["text"] and r["score"] >= 0.5 for r in recs)
    assert {"id", "url", "domain", "tokens", "lang"} <= set(recs[0])
    final = sorted((root / "final").glob("*.jsonl"))
    assert [p.name for p in final] == [p.name for p in shards]


def test_rerun_resumes_completed_iterations(mined):
    root, reports, _, run, _ = mined
    logs: list[str] = []
    run.log = logs.append
    again = run.run()
    assert again == reports
    assert "iteration 1: complete on disk, skipped" in logs and "iteration 2: complete on disk, skipped" in logs


def test_bad_config_and_slurm_executor(tmp_path, shared_data):
    with pytest.raises(ConfigError, match="does not exist"):
        MiningConfig(input=[str(tmp_path / "nope")], seed_positives=str(tmp_path))
    with pytest.raises(ConfigError, match="--seed-positives"):
        MiningRun(MiningConfig(input=[str(shared_data / "web")], output=str(tmp_path / "r"))).run()
    with pytest.raises(ConfigError, match="token_sample_rate"):
        MiningConfig(input=[str(shared_data / "web")], token_sample_rate=0)
    bad_tok = MiningConfig(input=[str(shared_data / "web")], seed_positives=str(shared_data / "web" / "docs.jsonl"),
                           output=str(tmp_path / "r"), tokenizer_type="hf", tokenizer_model=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="mining: tokenizer file not found"):
        MiningRun(bad_tok).run()
    assert not (tmp_path / "r" / "pages").exists()  # refused before any stage ran
    with pytest.raises(ConfigError, match="slurm-partition"):
        ExecutorConfig(executor="slurm")
    from datatrove.executor.slurm import SlurmPipelineExecutor

    ex = make_executor([jsonl_writer(tmp_path / "out")], tmp_path / "logs",
                       ExecutorConfig(executor="slurm", slurm_partition="cpu", tasks=8), "score")
    assert isinstance(ex, SlurmPipelineExecutor) and ex.world_size == 8
