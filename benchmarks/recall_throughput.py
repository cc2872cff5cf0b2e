#!/usr/bin/env python
"""Recall-stage throughput: the datatrove ScorePages step vs a bare fastText predict loop.

Both score the same page texts (../shared/data/web/docs.jsonl, repeated) with
the same model (paper settings: dim 256, lr 0.1, wordNgrams 3, minCount 3,
epoch 3).  The bare loop is one ``model.predict(normalise(text))`` per page:
the shared normalisation is the model's input contract (it was trained on
normalised text), so it belongs to both sides.  The step adds Document
handling, batching, token counts, scores in metadata, datatrove stats and the
per-page index file.  For information the raw loop (``predict`` on the text
with newlines replaced, which the model was not trained on) is timed too.
Best of ``--repeats`` runs each, interleaved; the last line prints docs/s of
the step and the bare loop and the overhead ratio (target: <= 1.25).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datatrove.data import Document  # noqa: E402

from megatron_dsm.mining.classifier import ClassifierConfig, MathClassifier, normalise, train  # noqa: E402
from megatron_dsm.mining.pipeline import ScorePages  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", default=str(Path(__file__).resolve().parents[2] / "shared/data/web/docs.jsonl"))
    ap.add_argument("--copies", type=int, default=2, help="times the page set is repeated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket", type=int, default=200_000)
    args = ap.parse_args()
    p = Path(args.docs)
    if not p.is_file():
        print(f"recall_throughput.py: error: docs file not found: {p}", file=sys.stderr)
        return 2
    rows = [json.loads(x) for x in open(p)]
    with tempfile.TemporaryDirectory(prefix="dsm_bench_") as tmp:
        model_path = Path(tmp) / "m.bin"
        clf = train([r["text"] for r in rows if r["label"] == "math"],
                    [r["text"] for r in rows if r["label"] == "non_math"], ClassifierConfig(bucket=args.bucket))
        clf.save(model_path)
        model = MathClassifier.load(model_path).model
        texts = [r["text"] for r in rows] * args.copies
        n = len(texts)

        def bare() -> float:
            t = time.perf_counter()
            for text in texts:
                model.predict(normalise(text), k=1)
            return time.perf_counter() - t

        def raw() -> float:
            t = time.perf_counter()
            for text in texts:
                model.predict(text.replace("\n", " "), k=1)
            return time.perf_counter() - t

        def step() -> float:
            docs = [Document(text=t, id=str(i), metadata={"url": None}) for i, t in enumerate(texts)]
            s = ScorePages(str(model_path), index_folder=str(Path(tmp) / "index"))
            t = time.perf_counter()
            out = sum(1 for _ in s.run(iter(docs)))
            dt = time.perf_counter() - t
            assert out == n and "score" in docs[0].metadata
            return dt

        t_bare, t_step, t_raw = [], [], []
        for _ in range(args.repeats):  # interleaved so machine load hits all alike
            t_bare.append(bare())
            t_step.append(step())
            t_raw.append(raw())
    b, s, r = min(t_bare), min(t_step), min(t_raw)
    print(f"pages={n} bare loop {n / b:.0f} docs/s ({b:.2f}s); ScorePages step {n / s:.0f} docs/s ({s:.2f}s); "
          f"raw-text loop {n / r:.0f} docs/s ({r:.2f}s), step/raw {s / r:.3f}")
    print(f"recall throughput: step {n / s:.0f} docs/s vs bare {n / b:.0f} docs/s; "
          f"overhead ratio {s / b:.3f} (target <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
