"""The demo corpus builds from vendored files only, and a rerun is a no-op."""

import json
import subprocess

from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dsm.data.demo_corpus import DATA, build
from megatron_dsm.data.mixture import load_mixture
from megatron_dsm.data.tokenizer import build_tokenizer
from tests.data.helpers import REPO


def test_vendored_files_and_licenses():
    for name, n_train, n_test in (("gsm8k", 7473, 1319), ("math", 7500, 5000)):
        d = DATA / name
        assert "MIT License" in (d / "LICENSE").read_text()
        assert sum(1 for _ in open(d / "train.jsonl")) == n_train
        assert sum(1 for _ in open(d / "test.jsonl")) == n_test


def test_build_is_complete_and_idempotent(tmp_path):
    out = tmp_path / "corpus"
    info = build(out, vocab_size=512, workers=1, limit=200)
    tok = build_tokenizer("hf", info["tokenizer"])
    assert tok.vocab_size == 512 and tok.fingerprint == info["fingerprint"]
    first = json.loads(open(DATA / "gsm8k" / "train.jsonl").readline())
    ds = IndexedDataset(info["prefixes"]["gsm8k"])
    assert len(ds) == 200
    assert tok.decode(ds[0][:-1]) == first["question"].strip() + "\n" + first["answer"].strip()
    mix = load_mixture(info["mixture"], tokenizer_fingerprint=tok.fingerprint)
    assert mix.shares == {"gsm8k": 0.4, "math": 0.6}
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".bin", ".idx", ".json")}
    r = subprocess.run(["bash", str(REPO / "examples/build_demo_corpus.sh"), str(out)], capture_output=True,
                       text=True, cwd=tmp_path, env={"VOCAB_SIZE": "512", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("exists, skipped") == 5
    assert mtimes == {p: p.stat().st_mtime_ns for p in mtimes}
