"""Build the demo pretraining corpus from the vendored GSM8K / MATH train splits.

Runs without ../shared: everything comes from examples/data/ (MIT-licensed
copies).  Steps, each skipped when its outputs already exist and are
complete (so a second run is a no-op):

1. text: ``OUT/text/{gsm8k,math}_train.jsonl`` with one ``text`` per problem
   (question + worked answer / problem + solution); test splits are never used;
2. tokenizer: ``tools/train_tokenizer.py`` trains a small byte-level BPE
   (vocab 4096 by default, so the tiny model trains fast) into ``OUT/tokenizer``;
3. datasets: ``tools/preprocess_data.py`` writes ``OUT/{gsm8k,math}_text_document``
   (rebuilt when their sidecar's tokenizer fingerprint is not the tokenizer's);
4. ``OUT/mixture.yaml`` blending the two and ``OUT/data_path.txt`` holding the
   equivalent ``--data-path`` string.

    python -m megatron_dsm.data.demo_corpus OUT [--vocab-size 4096]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from megatron_dsm.data import indexed
from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.io import atomic_write, read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"
# (name, vendored file, fields joined into the document text, mixture weight)
SOURCES = (
    ("gsm8k", DATA / "gsm8k" / "train.jsonl", ("question", "answer"), 0.4),
    ("math", DATA / "math" / "train.jsonl", ("problem", "solution"), 0.6),
)


def log(msg: str) -> None:
    print(f"[demo-corpus] {msg}", flush=True)


def write_text(src: Path, fields: tuple[str, ...], dst: Path, limit: int | None = None) -> int:
    if dst.is_file():
        return -1
    def texts():
        n = 0
        for _, rec in read_jsonl(src):
            text = "\n".join(str(rec[k]).strip() for k in fields if rec.get(k))
            if text:
                yield {"text": text}
                n += 1
                if limit and n >= limit:
                    return

    return write_jsonl(dst, texts())


def _tool(name: str, *args) -> None:
    cmd = [sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, args)]
    r = subprocess.run(cmd, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"[demo-corpus] {name} failed with status {r.returncode}: {' '.join(cmd)}")


def build(out: str | Path, vocab_size: int = 4096, workers: int = 2, limit: int | None = None) -> dict:
    """Build (or finish building) the corpus in ``out``; ``limit`` keeps only
    the first N problems per source (quick checks)."""
    out = Path(out).resolve()
    (out / "text").mkdir(parents=True, exist_ok=True)
    for _, src, _, _ in SOURCES:
        if not src.is_file():
            raise SystemExit(f"[demo-corpus] missing vendored file {src}")
    texts = {}
    for name, src, fields, _ in SOURCES:
        dst = out / "text" / f"{name}_train.jsonl"
        n = write_text(src, fields, dst, limit)
        log(f"text {dst}: " + ("exists, skipped" if n < 0 else f"{n} documents"))
        texts[name] = dst

    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        log(f"tokenizer {tok_dir}: exists, skipped")
    else:
        _tool("train_tokenizer", "--input", *texts.values(), "--json-keys", "text", "--type", "bytelevel-bpe",
              "--vocab-size", vocab_size, "--output", tok_dir)
    fingerprint = build_tokenizer("hf", tok_dir).fingerprint

    prefixes = {}
    for name, _, _, _ in SOURCES:
        prefix = out / f"{name}_text_document"
        side = indexed.read_sidecar(str(prefix)) if indexed.is_complete(str(prefix)) else None
        if side and side.get("fingerprint") == fingerprint:
            log(f"dataset {prefix}: exists, skipped")
        else:
            _tool("preprocess_data", "--input", texts[name], "--output-prefix", out / name,
                  "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", tok_dir, "--append-eod",
                  "--workers", workers)
        prefixes[name] = prefix

    mixture = out / "mixture.yaml"
    body = "# demo mixture written by megatron_dsm.data.demo_corpus\n" \
           f"tokenizer_fingerprint: {fingerprint}\nsources:\n" + "".join(
               f"  - {{name: {name}, weight: {w}, prefixes: [{name}_text_document]}}\n"
               for name, _, _, w in SOURCES)
    if not mixture.is_file() or mixture.read_text() != body:
        atomic_write(mixture, body)
    data_path = " ".join(f"{w} {prefixes[name]}" for name, _, _, w in SOURCES)
    (out / "data_path.txt").write_text(data_path + "\n")
    log(f"ready: --mixture {mixture}  or  --data-path \"{data_path}\"")
    return {"out": str(out), "tokenizer": str(tok_dir), "mixture": str(mixture), "data_path": data_path,
            "prefixes": {k: str(v) for k, v in prefixes.items()}, "fingerprint": fingerprint}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output folder")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N problems per source")
    args = ap.parse_args(argv)
    build(args.out, args.vocab_size, args.workers, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
