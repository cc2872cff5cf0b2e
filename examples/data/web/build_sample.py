#!/usr/bin/env python
"""How pages.jsonl.gz, seed.jsonl.gz and negatives.jsonl.gz were cut from ../shared/data/web/docs.jsonl.

Only documents whose licence allows redistribution with attribution are
taken: Stack Exchange posts (math.stackexchange.com, mathoverflow.net; CC
BY-SA, via EleutherAI/math-lm and StackMathQA) and C4 documents (ODC-BY, via
the LLaMA-Factory c4_demo file).  The Common Crawl pages of that file
(dolma) are never taken.  Each record keeps its id, url (the attribution
link of a Stack Exchange post), label and source; pages over 6,000
characters are left out rather than cut.

    python examples/data/web/build_sample.py ../shared/data/web/docs.jsonl examples/data/web

The demo recipe mixes the task's generated worked-solution pages into this
pool at run time (megatron_dsm/recipe/task.py), so they are not stored here.
"""

import gzip
import json
import random
import sys
from pathlib import Path

SE_SOURCES = ("EleutherAI/math-lm", "yifanzhang-pro/StackMathQA")
C4_SOURCE = "jincan333/MAS-TTS"
MAX_CHARS = 6000
POOL_SE, SEED_SE, NEG_C4 = 240, 120, 100
KEEP = ("id", "url", "domain", "label", "title", "text", "source")


def main(src: str, out: str) -> int:
    rows = [json.loads(line) for line in open(src, encoding="utf-8")]
    se = [r for r in rows if r["source"].startswith(SE_SOURCES) and r["label"] == "math"
          and len(r["text"]) <= MAX_CHARS]
    c4 = [r for r in rows if r["source"].startswith(C4_SOURCE) and len(r["text"]) <= MAX_CHARS]
    rng = random.Random(20240502)
    rng.shuffle(se)
    rng.shuffle(c4)
    pool = se[:POOL_SE] + c4[NEG_C4:]
    seed = se[POOL_SE:POOL_SE + SEED_SE]
    negatives = c4[:NEG_C4]
    rng.shuffle(pool)
    for name, recs in (("pages", pool), ("seed", seed), ("negatives", negatives)):
        with gzip.open(Path(out) / f"{name}.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
            for r in recs:
                f.write(json.dumps({k: r.get(k) for k in KEEP}, ensure_ascii=False) + "\n")
        print(f"{name}: {len(recs)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
