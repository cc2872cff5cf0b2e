"""Byte-for-byte parity with Megatron-LM's own tools/preprocess_data.py.

Megatron-LM's tool is not part of the megatron-core wheel, so this runs only
where MEGATRON_LM_DIR points at a checkout (tag core_v0.16.1; extra import
paths, e.g. for triton, in MEGATRON_LM_PYTHONPATH).  The non-slow suite
covers the same rule through megatron-core's tokenizers
(test_preprocess.py::test_ids_equal_megatron_lm_encoding)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.helpers import OLMO, run_cli

MLM = os.environ.get("MEGATRON_LM_DIR")


@pytest.mark.slow
@pytest.mark.skipif(not MLM, reason="MEGATRON_LM_DIR not set (Megatron-LM checkout needed)")
def test_outputs_identical_to_megatron_lm(shared_data, tmp_path):
    src = tmp_path / "in.jsonl"
    with open(shared_data / "web/docs.jsonl", "rb") as f, open(src, "wb") as g:
        g.writelines(f.readline() for _ in range(400))
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_bytes((shared_data / OLMO).read_bytes())
    (tok / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        x for x in (MLM, os.environ.get("MEGATRON_LM_PYTHONPATH")) if x)}
    r = subprocess.run([sys.executable, str(Path(MLM) / "tools/preprocess_data.py"), "--input", str(src),
                        "--output-prefix", str(tmp_path / "mlm"), "--tokenizer-type", "HuggingFaceTokenizer",
                        "--tokenizer-model", str(tok), "--append-eod", "--workers", "2"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("preprocess_data", "--input", src, "--output-prefix", tmp_path / "ours", "--tokenizer-type",
                "HuggingFaceTokenizer", "--tokenizer-model", tok, "--append-eod", "--workers", "2",
                "--progress", "false")
    assert r.returncode == 0, r.stderr[-2000:]
    for s in (".bin", ".idx"):
        assert (tmp_path / f"ours_text_document{s}").read_bytes() == (tmp_path / f"mlm_text_document{s}").read_bytes()
