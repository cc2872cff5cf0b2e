"""tools/preprocess_data.py: round trip, determinism over --workers and
--partitions, Megatron-LM's token ids, input formats, sentence splitting."""

import gzip
import json
import shutil
import unicodedata

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dsm.data import indexed
from megatron_dsm.data.preprocess import (PreprocessConfig, discover_inputs, load_punkt, plan_partitions, run,
                                          save_punkt, train_punkt)
from megatron_dsm.data.tokenizer import build_tokenizer
from tests.data.helpers import LLAMA, OLMO, read_texts, run_cli, write_jsonl


def _cfg(inp, prefix, tok, **kw):
    return PreprocessConfig(input=str(inp), output_prefix=str(prefix), tokenizer_model=str(tok),
                            progress=False, **kw)


def test_round_trip_web_docs(shared_data, tmp_path):
    """docs.jsonl -> preprocess -> IndexedDataset -> decode == input (lossless byte-level BPE)."""
    docs = shared_data / "web/docs.jsonl"
    s = run(_cfg(docs, tmp_path / "web", shared_data / OLMO, append_eod=True, workers=2))
    assert s["ok"] and s["documents"] == 2913 and s["rejected"] == 0
    tok = build_tokenizer("hf", shared_data / OLMO)
    ds = IndexedDataset(str(tmp_path / "web_text_document"))
    assert ds.index.dtype == np.uint16 and len(ds) == 2913
    texts = read_texts(docs)
    exact = 0
    for i, text in enumerate(texts):
        ids = ds[i]
        assert ids[-1] == tok.eod and tok.eod not in ids[:-1]
        decoded = tok.decode(ids[:-1])
        # the tokenizer's normaliser is NFC: decoding gives the NFC form, which
        # is the input itself for every document already in NFC
        assert decoded == unicodedata.normalize("NFC", text), i
        exact += decoded == text
    non_nfc = sum(t != unicodedata.normalize("NFC", t) for t in texts)
    assert exact == len(texts) - non_nfc
    side = json.loads((tmp_path / "web_text_document.json").read_text())
    assert side["documents"] == 2913 and side["tokens"] == s["tokens"] == int(ds.index.sequence_lengths.sum())
    assert side["fingerprint"] == tok.fingerprint and side["sources"] == [str(docs)]


def _digests_over_workers_and_partitions(src, tok, tmp_path):
    digests = {}
    for w, p in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        prefix = tmp_path / f"w{w}p{p}"
        r = run_cli("preprocess_data", "--input", src, "--output-prefix", prefix, "--tokenizer-type",
                    "HuggingFaceTokenizer", "--tokenizer-model", tok, "--append-eod",
                    "--workers", w, "--partitions", p, "--progress", "false")
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"partitions: {p}" in r.stdout
        digests[(w, p)] = tuple((tmp_path / f"w{w}p{p}_text_document{s}").read_bytes() for s in (".bin", ".idx"))
    assert not list(tmp_path.glob("*.part*")) and not list(tmp_path.glob("*.tmp*"))
    return digests


def test_bytes_independent_of_workers_and_partitions(shared_data, tmp_path):
    """Each run in its own process, so --workers really sets the thread-pool size."""
    src = tmp_path / "in.jsonl"
    with open(shared_data / "web/docs.jsonl", "rb") as f, open(src, "wb") as g:
        g.writelines(f.readline() for _ in range(1000))
    digests = _digests_over_workers_and_partitions(src, shared_data / OLMO, tmp_path)
    assert len(set(digests.values())) == 1
    assert IndexedDataset(str(tmp_path / "w2p2_text_document")).index.document_indices.size == 1001


@pytest.mark.slow
def test_bytes_independent_of_workers_and_partitions_full_file(shared_data, tmp_path):
    digests = _digests_over_workers_and_partitions(shared_data / "web/docs.jsonl", shared_data / OLMO, tmp_path)
    assert len(set(digests.values())) == 1


def test_ids_equal_megatron_lm_encoding(shared_data, tmp_path):
    """Megatron-LM's Encoder.encode: megatron-core tokenize(text) + eod, one sequence per document."""
    from megatron.core.tokenizers import MegatronTokenizer

    src = tmp_path / "in.jsonl"
    with open(shared_data / "web/docs.jsonl", "rb") as f, open(src, "wb") as g:
        g.writelines(f.readline() for _ in range(150))
    ref = MegatronTokenizer.from_pretrained(tokenizer_path=str(shared_data / LLAMA),
                                            metadata_path={"library": "sentencepiece"})
    run(_cfg(src, tmp_path / "sp", shared_data / LLAMA, tokenizer_type="SentencePieceTokenizer",
             append_eod=True, workers=2))
    ds = IndexedDataset(str(tmp_path / "sp_text_document"))
    assert ds.index.dtype == np.uint16
    for i, text in enumerate(read_texts(src)):
        assert ds[i].tolist() == ref.tokenize(text) + [ref.eod]


def test_gz_parquet_and_folder_inputs_match_jsonl(shared_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [{"text": t, "id": i} for i, t in enumerate(read_texts(shared_data / "web/docs.jsonl", limit=120))]
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", recs[:40])
    with gzip.open(d / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs[40:80])
    pq.write_table(pa.Table.from_pylist(recs[80:]), d / "c.parquet")
    write_jsonl(tmp_path / "all.jsonl", recs)
    tok = shared_data / OLMO
    run(_cfg(d, tmp_path / "folder", tok, append_eod=True))
    run(_cfg(tmp_path / "all.jsonl", tmp_path / "flat", tok, append_eod=True))
    run(_cfg(str(d / "*.jsonl*"), tmp_path / "glob", tok, append_eod=True))
    a = (tmp_path / "folder_text_document.bin").read_bytes()
    assert a == (tmp_path / "flat_text_document.bin").read_bytes()
    assert indexed.dataset_counts(str(tmp_path / "glob_text_document")) == (80, sum(
        int(x.size) for x in list(indexed.iter_documents(str(tmp_path / "flat_text_document")))[:80]))


def test_partition_plan_is_contiguous_and_line_aligned(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"text": "a" * (i % 7 + 1)} for i in range(100)])
    plan = plan_partitions([f], 4)
    assert len(plan) == 4
    units = [u for p in plan for u in p]
    assert units[0].start == 0 and units[-1].end == f.stat().st_size
    data = f.read_bytes()
    for a, b in zip(units, units[1:]):
        assert a.end == b.start and data[b.start - 1:b.start] == b"\n"
        assert b.first_line == data[:b.start].count(b"\n") + 1


def test_split_sentences_keep_newlines(shared_data, tmp_path):
    texts = read_texts(shared_data / "web/docs.jsonl", limit=80)
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    params = tmp_path / "punkt.json"
    s = run(_cfg(src, tmp_path / "ss", shared_data / OLMO, split_sentences=True, keep_newlines=True,
                 append_eod=True, save_punkt_params=str(params)))
    assert s["ok"]
    prefix = str(tmp_path / "ss_text_sentence")
    ds = IndexedDataset(prefix)
    assert len(ds) > 3 * len(texts)  # many sentences per document
    tok = build_tokenizer("hf", shared_data / OLMO)
    docs = list(indexed.iter_documents(prefix))
    # whitespace stays with its sentence, so the sentences join back into the text
    # (exact for documents in NFC, like the round trip)
    for text, ids in zip(texts, docs):
        if text == unicodedata.normalize("NFC", text):
            assert tok.decode(ids[:-1]) == text
    # the saved Punkt parameters reload and give the same bytes
    run(_cfg(src, tmp_path / "ss2", shared_data / OLMO, split_sentences=True, keep_newlines=True,
             append_eod=True, punkt_params=str(params)))
    assert (tmp_path / "ss2_text_sentence.idx").read_bytes() == (tmp_path / "ss_text_sentence.idx").read_bytes()


def test_punkt_trained_on_input_splits_sentences():
    text = ("Dr. Smith proved the lemma. Then he wrote it down. " * 50 +
            "The value is 3.14 approximately. It is not rational. " * 50)
    params = train_punkt([text])
    from megatron_dsm.data.preprocess import SentenceSplitter

    sents = SentenceSplitter(params).split("The proof is short. It uses induction. Dr. Smith agrees.")
    assert sents[:2] == ["The proof is short.", "It uses induction."]


def test_punkt_params_file_round_trip_and_bad_file(tmp_path):
    p = train_punkt(["A cat sat. A dog ran. Mr. Brown left. " * 30])
    save_punkt(p, tmp_path / "p.json")
    q = load_punkt(tmp_path / "p.json")
    assert q.abbrev_types == p.abbrev_types and q.sent_starters == p.sent_starters
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a Punkt parameters file"):
        load_punkt(tmp_path / "bad.json")


def test_bad_arguments_fail_before_work(shared_data, tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        discover_inputs(str(tmp_path / "missing*.jsonl"))
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        _cfg(tmp_path, tmp_path / "o", shared_data / OLMO, workers=0)
    r = run_cli("preprocess_data", "--input", tmp_path / "none.jsonl", "--output-prefix", tmp_path / "o",
                "--tokenizer-model", shared_data / OLMO)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --input")
