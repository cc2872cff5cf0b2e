"""Tokenizer back-ends: special ids, round trips, and token ids equal to
megatron-core's own tokenizers (what Megatron-LM's preprocess tool calls)."""

import json
import shutil

import pytest

from megatron_dsm.data.tokenizer import TokenizerError, build_tokenizer
from tests.data.helpers import LLAMA, OLMO, read_texts


@pytest.fixture(scope="module")
def olmo_dir(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("olmo")
    shutil.copy(shared_data / OLMO, d / "tokenizer.json")
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return d


def test_hf_special_ids_and_vocab(shared_data, olmo_dir):
    t = build_tokenizer("hf", shared_data / OLMO)
    # OLMo/GPT-NeoX: <|endoftext|> is 50279, <|padding|> is 1, 50280 ids with added tokens
    assert (t.vocab_size, t.eod, t.pad, t.bos) == (50280, 50279, 1, None)
    d = build_tokenizer("HuggingFaceTokenizer", olmo_dir)
    assert d.fingerprint == t.fingerprint and d.eod == 50279


def test_hf_round_trip_and_batch(shared_data):
    t = build_tokenizer("hf", shared_data / OLMO)
    texts = ["Let $x^2 = 4$; then x = ±2.", "  two  spaces\n\nand a tab\t", "数学 ∑_{i=1}^n i"]
    batch = t.batch_encode(texts, num_threads=2)
    assert batch == [t.encode(x) for x in texts]
    assert [t.decode(ids) for ids in batch] == texts
    assert t.encode("hello") == [25521]  # 'hello' is a single token in GPT-NeoX's vocabulary


def test_hf_ids_equal_megatron_core(shared_data, olmo_dir):
    from megatron.core.tokenizers import MegatronTokenizer

    ref = MegatronTokenizer.from_pretrained(tokenizer_path=str(olmo_dir), metadata_path={"library": "huggingface"})
    ours = build_tokenizer("hf", olmo_dir)
    assert (ref.vocab_size, ref.eod) == (ours.vocab_size, ours.eod)
    for text in read_texts(shared_data / "web/docs.jsonl", limit=60):
        assert ref.tokenize(text) == ours.encode(text)


def test_sentencepiece_ids_equal_megatron_core(shared_data):
    from megatron.core.tokenizers import MegatronTokenizer

    path = shared_data / LLAMA
    ref = MegatronTokenizer.from_pretrained(tokenizer_path=str(path), metadata_path={"library": "sentencepiece"})
    t = build_tokenizer("SentencePieceTokenizer", path)
    assert (t.vocab_size, t.bos, t.eod, t.pad) == (32000, 1, 2, None)
    assert (ref.vocab_size, ref.eod) == (t.vocab_size, t.eod)
    texts = read_texts(shared_data / "web/docs.jsonl", limit=40)
    assert t.batch_encode(texts, num_threads=2) == [ref.tokenize(x) for x in texts]
    assert t.decode(t.encode("The sum is 42.")) == "The sum is 42."


def test_byte_fallback_is_lossless():
    t = build_tokenizer("byte")
    text = "é∫\n\x00x"
    ids = t.encode(text)
    # UTF-8 bytes shifted by 3: 'é' = c3 a9 -> 198, 172
    assert ids[:2] == [0xC3 + 3, 0xA9 + 3] and len(ids) == len(text.encode())
    assert t.decode(ids) == text and t.vocab_size == 259 and (t.pad, t.bos, t.eod) == (0, 1, 2)


def test_fingerprints_differ(shared_data):
    fps = {build_tokenizer("auto", shared_data / OLMO).fingerprint,
           build_tokenizer("auto", shared_data / LLAMA).fingerprint,
           build_tokenizer("byte").fingerprint}
    assert len(fps) == 3


def test_bad_paths_fail_with_one_line(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        build_tokenizer("hf", tmp_path / "nope.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="not a tokenizers JSON") as e:
        build_tokenizer("hf", bad)
    assert "\n" not in str(e.value)
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        build_tokenizer("wordpiece", bad)
