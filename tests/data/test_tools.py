"""merge_datasets.py, dataset_stats.py and train_tokenizer.py."""

import json

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dsm.data import indexed
from megatron_dsm.data.preprocess import PreprocessConfig, run
from megatron_dsm.data.tokenizer import build_tokenizer
from tests.data.helpers import OLMO, load_tool, read_texts, write_jsonl


def test_merge_equals_single_run(shared_data, tmp_path, capsys):
    texts = read_texts(shared_data / "web/docs.jsonl", limit=90)
    for i in range(3):
        write_jsonl(tmp_path / f"s{i}.jsonl", [{"text": t} for t in texts[30 * i:30 * (i + 1)]])
        run(PreprocessConfig(input=str(tmp_path / f"s{i}.jsonl"), output_prefix=str(tmp_path / f"shard{i}"),
                             tokenizer_model=str(shared_data / OLMO), append_eod=True, progress=False))
    write_jsonl(tmp_path / "all.jsonl", [{"text": t} for t in texts])
    run(PreprocessConfig(input=str(tmp_path / "all.jsonl"), output_prefix=str(tmp_path / "all"),
                         tokenizer_model=str(shared_data / OLMO), append_eod=True, progress=False))
    tool = load_tool("merge_datasets")
    assert tool.main(["--input", str(tmp_path / "shard*_text_document"), "--output-prefix",
                      str(tmp_path / "merged")]) == 0
    assert "merged 3 datasets" in capsys.readouterr().out
    for s in (".bin", ".idx"):
        assert (tmp_path / f"merged{s}").read_bytes() == (tmp_path / f"all_text_document{s}").read_bytes()
    side = json.loads((tmp_path / "merged.json").read_text())
    assert side["documents"] == 90 and side["fingerprint"] == build_tokenizer("hf", shared_data / OLMO).fingerprint
    # shards of different vocabularies refuse to merge
    byte = str(tmp_path / "byte")
    with indexed.IndexedDatasetWriter(byte, np.int32) as w:
        w.add_document([1, 2])
    assert tool.main(["--input", str(tmp_path / "shard0_text_document"), byte, "--output-prefix",
                      str(tmp_path / "bad")]) == 2
    assert "different dtypes" in capsys.readouterr().err
    assert not (tmp_path / "bad.idx").exists()


def test_dataset_stats_histogram(tmp_path, capsys):
    prefix = str(tmp_path / "h")
    with indexed.IndexedDatasetWriter(prefix, np.uint16) as w:
        for n in (1, 3, 3, 100):
            w.add_document(list(range(n)))
    tool = load_tool("dataset_stats")
    s = tool.prefix_stats(prefix)
    assert (s["documents"], s["tokens"], s["max"]) == (4, 107, 100)
    # power-of-two buckets: 1 in [1,2), 3 and 3 in [2,4), 100 in [64,128)
    assert s["histogram"] == [(1, 2, 1), (2, 4, 2), (64, 128, 1)]
    assert tool.main([prefix]) == 0
    assert "4 documents" in capsys.readouterr().out
    assert tool.main([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.parametrize("kind,vocab", [("bytelevel-bpe", 600), ("sentencepiece-bpe", 600)])
def test_train_tokenizer(shared_data, tmp_path, kind, vocab):
    src = tmp_path / "t.jsonl"
    with open(shared_data / "train/gsm8k/train.jsonl", "rb") as f, open(src, "wb") as g:
        g.writelines(f.readline() for _ in range(400))
    tool = load_tool("train_tokenizer")
    out = tmp_path / "tok"
    assert tool.main(["--input", str(src), "--json-keys", "question", "answer", "--type", kind,
                      "--vocab-size", str(vocab), "--output", str(out)]) == 0
    tok = build_tokenizer("auto", out)
    assert tok.vocab_size == vocab and tok.eod is not None and tok.pad is not None
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips in May. ∑ é"
    assert tok.decode(tok.encode(text)) == text  # byte-level / byte fallback: lossless
    assert not list(tmp_path.glob("tok.tmp*"))


def test_train_tokenizer_bad_input(tmp_path, capsys):
    tool = load_tool("train_tokenizer")
    assert tool.main(["--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "file not found" in capsys.readouterr().err
    write_jsonl(tmp_path / "x.jsonl", [{"body": "no text key"}])
    assert tool.main(["--input", str(tmp_path / "x.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "no text under keys" in capsys.readouterr().err
