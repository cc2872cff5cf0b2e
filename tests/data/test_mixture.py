"""Mixture files: validation before anything is built, the blend handed to
megatron-core, and the shares its BlendedDataset really realises."""

import json
import shutil

import numpy as np
import pytest

from megatron_dsm.data import indexed
from megatron_dsm.data.mixture import load_mixture, parse_mixture, realised_shares, validate_prefixes
from megatron_dsm.data.preprocess import PreprocessConfig, run
from megatron_dsm.data.tokenizer import build_tokenizer
from tests.data.helpers import OLMO, REPO, load_tool, write_jsonl


@pytest.fixture(scope="module")
def sources(shared_data, tmp_path_factory):
    """Four small datasets from the web documents (one source split in two shards)."""
    d = tmp_path_factory.mktemp("mix")
    lines = (shared_data / "web/docs.jsonl").read_bytes().splitlines(keepends=True)
    spans = {"math": (0, 120), "code": (120, 170), "nl_a": (170, 200), "nl_b": (200, 260)}
    for name, (a, b) in spans.items():
        (d / f"{name}.jsonl").write_bytes(b"".join(lines[a:b]))
        run(PreprocessConfig(input=str(d / f"{name}.jsonl"), output_prefix=str(d / name),
                             tokenizer_model=str(shared_data / OLMO), append_eod=True, progress=False))
    return d


def _yaml(d, body: str, name="mix.yaml"):
    p = d / name
    p.write_text(body)
    return p


def test_realised_shares_within_one_point(sources):
    mix = load_mixture(_yaml(sources, """
sources:
  - {name: math, weight: 56, prefixes: [math_text_document]}
  - {name: code, weight: 30, prefixes: [code_text_document]}
  - {name: natural_language, weight: 14, prefixes: ["nl_*_text_document"]}
"""))
    prefixes, weights = mix.to_blend()
    assert [p.rsplit("/", 1)[1] for p in prefixes] == ["math_text_document", "code_text_document",
                                                       "nl_a_text_document", "nl_b_text_document"]
    assert sum(weights) == pytest.approx(1.0)
    # a source's shards share its weight in proportion to their tokens
    ta, tb = (indexed.dataset_counts(p)[1] for p in prefixes[2:])
    assert weights[2] == pytest.approx(0.14 * ta / (ta + tb)) and weights[3] == pytest.approx(0.14 * tb / (ta + tb))
    got = realised_shares(mix, 10_000, seq_length=128)
    for name, want in mix.shares.items():
        assert abs(got[name] - want) <= 0.01, (name, got[name], want)


def test_dataset_stats_cli_prints_shares(sources, capsys):
    mix = _yaml(sources, """
sources:
  - {name: math, weight: 3, prefixes: [math_text_document]}
  - {name: code, weight: 1, prefixes: [code_text_document]}
""", "two.yaml")
    tool = load_tool("dataset_stats")
    assert tool.main([str(sources / "code_text_document"), "--mixture", str(mix), "--samples", "2000",
                      "--seq-length", "64"]) == 0
    out = capsys.readouterr().out
    docs, tokens = indexed.dataset_counts(str(sources / "code_text_document"))
    assert f"{docs:,} documents" in out and f"{tokens:,} tokens" in out
    assert "75.00%" in out and "25.00%" in out and "max |realised - target|" in out
    worst = float(out.strip().splitlines()[-1].split("=")[1].split()[0])
    assert worst <= 1.0


def test_paper_mixture_config_weights():
    mix = parse_mixture(REPO / "examples/configs/dsm_mixture.yaml")
    assert mix.shares == {"deepseekmath_corpus": 0.56, "algebraic_stack": 0.04, "arxiv": 0.10,
                          "github_code": 0.20, "natural_language": 0.10}
    # the prefixes are placeholders: loading without the data says which source is missing
    with pytest.raises(ValueError, match="deepseekmath_corpus"):
        load_mixture(REPO / "examples/configs/dsm_mixture.yaml")


def test_validate_prefixes_accepts_good_blend(sources, shared_data):
    tok = build_tokenizer("hf", shared_data / OLMO)
    infos = validate_prefixes([str(sources / "math_text_document")], [1.0], tok.fingerprint)
    assert infos[0]["documents"] == 120 and infos[0]["tokens"] > 0


def test_bad_weights(sources):
    p = str(sources / "math_text_document")
    with pytest.raises(ValueError, match="weight must be > 0"):
        validate_prefixes([p], [0.0])
    with pytest.raises(ValueError, match="1 prefixes but 2 weights"):
        validate_prefixes([p], [1, 2])
    with pytest.raises(ValueError, match=r"sources\[0\] \(a\): weight must be a number > 0, got -1"):
        load_mixture(_yaml(sources, "sources:\n  - {name: a, weight: -1, prefixes: [math_text_document]}\n", "w.yaml"))


def test_missing_and_empty_prefixes(sources, tmp_path):
    with pytest.raises(ValueError, match=r"missing .*nothere\.bin"):
        validate_prefixes([str(tmp_path / "nothere")])
    empty = str(tmp_path / "empty")
    indexed.IndexedDatasetWriter(empty, np.uint16).finalize()
    shutil.copy(str(sources / "math_text_document.json"), empty + ".json")
    with pytest.raises(ValueError, match="dataset is empty .*never finish"):
        validate_prefixes([empty])
    nosidecar = str(tmp_path / "nosidecar")
    for s in (".bin", ".idx"):
        shutil.copy(str(sources / "code_text_document") + s, nosidecar + s)
    with pytest.raises(ValueError, match="missing .*nosidecar.json sidecar"):
        validate_prefixes([nosidecar])
    with pytest.raises(ValueError, match="matches no dataset"):
        load_mixture(_yaml(sources, "sources:\n  - {name: a, weight: 1, prefixes: ['zz_*']}\n", "g.yaml"))


def test_fingerprint_mismatch(sources, shared_data, tmp_path):
    other = str(tmp_path / "other")
    for s in (".bin", ".idx"):
        shutil.copy(str(sources / "code_text_document") + s, other + s)
    side = json.loads((sources / "code_text_document.json").read_text())
    side["fingerprint"] = "f" * 64
    (tmp_path / "other.json").write_text(json.dumps(side))
    good = str(sources / "math_text_document")
    with pytest.raises(ValueError, match="differs from .*all sources must share one tokenizer"):
        validate_prefixes([good, other], [1, 1])
    with pytest.raises(ValueError, match="but the model's tokenizer is ffffffffffff"):
        validate_prefixes([good], None, tokenizer_fingerprint="f" * 64)
    sp = build_tokenizer("byte")
    with pytest.raises(ValueError, match="model's tokenizer"):
        load_mixture(_yaml(sources, "sources:\n  - {name: m, weight: 1, prefixes: [math_text_document]}\n", "f.yaml"),
                     tokenizer_fingerprint=sp.fingerprint)


def test_malformed_mixture_files(tmp_path):
    with pytest.raises(ValueError, match="mixture file not found"):
        parse_mixture(tmp_path / "none.yaml")
    with pytest.raises(ValueError, match="non-empty 'sources' list"):
        parse_mixture(_yaml(tmp_path, "weights: [1, 2]\n", "a.yaml"))
    with pytest.raises(ValueError, match="duplicate source name 'x'"):
        parse_mixture(_yaml(tmp_path, "sources:\n  - {name: x, weight: 1, prefixes: [a]}\n"
                                      "  - {name: x, weight: 1, prefixes: [b]}\n", "b.yaml"))
    with pytest.raises(ValueError, match="prefixes must be a non-empty list"):
        parse_mixture(_yaml(tmp_path, "sources:\n  - {name: x, weight: 1}\n", "c.yaml"))
