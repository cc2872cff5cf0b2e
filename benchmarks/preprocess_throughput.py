#!/usr/bin/env python
"""Tokens/s of tools/preprocess_data.py against Megatron-LM's own tool.

Both tools run on the same input (default: 5 copies of
../shared/data/web/docs.jsonl, or the vendored GSM8K+MATH train text when
../shared is absent), the same tokenizer (the OLMo GPT-NeoX byte-level BPE,
or a small one trained on the input when ../shared is absent) and
``--workers 2``, one after the other in this run.  Each figure is tokens
written / wall-clock seconds of the whole command, start-up included, the
way Megatron-LM's tool was measured in ../shared/bench/README.md.  With
``--repeats N`` the two tools alternate N times and medians are compared,
which keeps the ratio meaningful on a shared, noisy machine.

Megatron-LM's tool is not in the megatron-core wheel: set MEGATRON_LM_DIR to
a Megatron-LM checkout (tag core_v0.16.1; it needs triton, transformers, six
and pydantic importable; extra import paths may go in MEGATRON_LM_PYTHONPATH).
The benchmark checks that both tools wrote the same token ids and document
boundaries.  Without MEGATRON_LM_DIR it says so and still prints our figure
and the ceiling: the tokenizer's raw ``encode_batch`` speed on the same
text, preloaded in memory, with the same two threads.

    python benchmarks/preprocess_throughput.py [--copies 5] [--workers 2]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
OLMO = SHARED / "tokenizers" / "olmo_gpt-neox-20b_bytelevel_bpe" / "tokenizer.json"


def make_input(tmp: Path, copies: int) -> Path:
    src = SHARED / "web" / "docs.jsonl"
    dst = tmp / "input.jsonl"
    if src.is_file():
        data = src.read_bytes()
    else:
        parts = []
        for name, fields in (("gsm8k", ("question", "answer")), ("math", ("problem", "solution"))):
            for line in open(REPO / "examples" / "data" / name / "train.jsonl", encoding="utf-8"):
                rec = json.loads(line)
                parts.append(json.dumps({"text": "\n".join(str(rec[k]) for k in fields)}) + "\n")
        data = "".join(parts).encode()
    dst.write_bytes(data * copies)
    return dst


def make_tokenizer(tmp: Path, inp: Path) -> Path:
    """A folder both tools load: tokenizer.json + tokenizer_config.json naming eos."""
    d = tmp / "tokenizer"
    if OLMO.is_file():
        d.mkdir()
        shutil.copy(OLMO, d / "tokenizer.json")
        (d / "tokenizer_config.json").write_text(json.dumps(
            {"eos_token": "<|endoftext|>", "pad_token": "<|padding|>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    else:
        subprocess.run([sys.executable, str(REPO / "tools/train_tokenizer.py"), "--input", str(inp),
                        "--vocab-size", "8192", "--output", str(d)], check=True, capture_output=True)
    return d


CPU = []  # CPU seconds (user + sys, the command and every process it waited for) per timed() call


def timed(cmd, env=None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    return dt


def read_tokens(prefix: str):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    return ds, int(ds.index.sequence_lengths.sum())


def raw_batch_encode(tok_dir: Path, inp: Path, workers: int) -> tuple[int, float]:
    """The ceiling: the Rust tokenizer alone on preloaded text, in a fresh
    process so its thread pool has exactly ``workers`` threads."""
    code = f"""
import json, time, orjson
from tokenizers import Tokenizer
tok = Tokenizer.from_file({str(tok_dir / 'tokenizer.json')!r})
texts = [orjson.loads(l)["text"] for l in open({str(inp)!r}, "rb")]
t = time.perf_counter()
n = 0
for i in range(0, len(texts), 512):
    n += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i:i + 512], add_special_tokens=False))
print(json.dumps({{"tokens": n, "seconds": time.perf_counter() - t}}))
"""
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers), "TOKENIZERS_PARALLELISM": "true"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return d["tokens"], d["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=5, help="copies of the input text (default 5)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1,
                    help="alternate the two tools this many times and compare medians (noisy machines)")
    args = ap.parse_args()
    mlm = os.environ.get("MEGATRON_LM_DIR")
    with tempfile.TemporaryDirectory(prefix="dsm_pp_bench_") as t:
        tmp = Path(t)
        inp = make_input(tmp, args.copies)
        tok_dir = make_tokenizer(tmp, inp)
        mb = inp.stat().st_size / 2 ** 20
        print(f"input: {inp.stat().st_size:,} bytes ({mb:.1f} MB), tokenizer: {tok_dir}, --workers {args.workers}")

        ours_cmd = [sys.executable, str(REPO / "tools/preprocess_data.py"), "--input", str(inp),
                    "--output-prefix", str(tmp / "ours"), "--tokenizer-type", "HuggingFaceTokenizer",
                    "--tokenizer-model", str(tok_dir), "--append-eod", "--workers", str(args.workers),
                    "--progress", "false"]
        tool = Path(mlm) / "tools" / "preprocess_data.py" if mlm else None
        if tool is not None and not tool.is_file():
            sys.exit(f"MEGATRON_LM_DIR={mlm}: no tools/preprocess_data.py there")
        env = dict(os.environ)
        if mlm:
            env["PYTHONPATH"] = os.pathsep.join(
                x for x in (mlm, os.environ.get("MEGATRON_LM_PYTHONPATH"), os.environ.get("PYTHONPATH")) if x)
        mlm_cmd = [sys.executable, str(tool), "--input", str(inp), "--output-prefix", str(tmp / "mlm"),
                   "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(tok_dir),
                   "--append-eod", "--workers", str(args.workers)]
        ours_times, mlm_times, ours_cpu, mlm_cpu = [], [], [], []
        for rep in range(max(1, args.repeats)):
            ours_times.append(timed(ours_cmd))
            ours_cpu.append(CPU[-1])
            print(f"  run {rep + 1}: ours {ours_times[-1]:.2f} s wall, {ours_cpu[-1]:.2f} CPU-s", flush=True)
            if mlm:
                mlm_times.append(timed(mlm_cmd, env=env))
                mlm_cpu.append(CPU[-1])
                print(f"  run {rep + 1}: megatron-lm {mlm_times[-1]:.2f} s wall, {mlm_cpu[-1]:.2f} CPU-s", flush=True)
        ours_s = statistics.median(ours_times)
        ours_ds, ours_tokens = read_tokens(str(tmp / "ours_text_document"))
        ours_tps = ours_tokens / ours_s
        print(f"ours (tools/preprocess_data.py): {ours_tokens:,} tokens in {ours_s:.2f} s = {ours_tps:,.0f} tokens/s")

        raw_tokens, raw_s = raw_batch_encode(tok_dir, inp, args.workers)
        raw_tps = raw_tokens / raw_s
        print(f"raw tokenizers encode_batch ({args.workers} threads, text preloaded): {raw_tokens:,} tokens "
              f"in {raw_s:.2f} s = {raw_tps:,.0f} tokens/s")
        print(f"ours / raw batch-encode: {ours_tps / raw_tps:.2f}")

        if not mlm:
            print("MEGATRON_LM_DIR is not set: Megatron-LM's tools/preprocess_data.py was not run "
                  "(point it at a Megatron-LM checkout to compare)")
            print(f"ratio ours/raw-tokenizer: {ours_tps / raw_tps:.2f} (no Megatron-LM comparison)")
            return 0
        mlm_s = statistics.median(mlm_times)
        mlm_ds, mlm_tokens = read_tokens(str(tmp / "mlm_text_document"))
        mlm_tps = mlm_tokens / mlm_s
        print(f"Megatron-LM tools/preprocess_data.py: {mlm_tokens:,} tokens in {mlm_s:.2f} s = {mlm_tps:,.0f} tokens/s")
        same_ids = (mlm_tokens == ours_tokens
                    and (tmp / "mlm_text_document.bin").read_bytes() == (tmp / "ours_text_document.bin").read_bytes())
        same_docs = list(mlm_ds.index.document_indices) == list(ours_ds.index.document_indices)
        print(f"token ids agree: {same_ids}; document boundaries agree: {same_docs}")
        print(f"megatron-lm / raw batch-encode: {mlm_tps / raw_tps:.2f}")
        cpu_ratio = (ours_tokens / statistics.median(ours_cpu)) / (mlm_tokens / statistics.median(mlm_cpu))
        print(f"tokens per CPU-second: ours {ours_tokens / statistics.median(ours_cpu):,.0f}, "
              f"megatron-lm {mlm_tokens / statistics.median(mlm_cpu):,.0f} (ratio {cpu_ratio:.2f}x; "
              f"less sensitive to other load on the machine than wall time)")
        ratio = ours_tps / mlm_tps
        print(f"ratio ours/megatron-lm tokens/s: {ratio:.2f}x (target >= 2x; ids {'agree' if same_ids else 'DIFFER'})")
        return 0 if same_ids and same_docs else 1


if __name__ == "__main__":
    sys.exit(main())
