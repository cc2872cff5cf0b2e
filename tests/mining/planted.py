"""A jsonl corpus in several shards with duplicates planted across shards, and the answer.

Used by tests/mining/test_dedup_stages.py and the mining job of
tests/slurm/run_slurm_test.sh.  Every page is a random 300-word article over
a 2,000-word vocabulary (two such articles share almost no 5-word shingle),
so the only duplicates are the planted ones:

* URL groups: the same URL spelled differently (case, default port,
  fragment, trailing slash), each copy with its own text;
* exact groups: the same text up to case and whitespace, other URLs;
* near groups: one word of 300 replaced per copy (5-shingle Jaccard about
  0.97, caught by 14 x 8 MinHash bands with probability 1 - 1e-8), other URLs;
* short exact copies: texts of three words (fewer than a MinHash shingle).

Copies of a group sit in different shards, the original in the lowest one.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SHARDS = 6
GROUPS = {"url": 4, "exact": 4, "near": 4}  # groups per kind; sizes cycle through 2, 3


def _article(rng: random.Random, n: int = 300) -> str:
    return " ".join(f"w{rng.randrange(2000)}" for _ in range(n))


def _url_variants(host: str, path: str) -> list[str]:
    return [f"https://{host}/{path}", f"HTTPS://{host.upper()}:443/{path}/", f"https://{host}/{path}#comments"]


def write_planted(folder: str | Path, seed: int = 0, unique: int = 60, heavy: int = 0) -> dict:
    """Write ``folder/shard_<k>.jsonl`` and return the answer: ``groups`` (kind -> list of id lists, the
    first in input order first), ``unique`` ids, ``removed`` (kind -> pages a correct dedup removes),
    ``pages``.  ``heavy`` more unique pages go to shard 2, so that the task reading it runs longest."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[list[dict]] = [[] for _ in range(SHARDS)]
    uniq = []
    for i in range(unique):
        row = {"id": f"u{i}", "url": f"https://site{i % 7}.org/page/{i}", "text": _article(rng)}
        shards[i % SHARDS].append(row)
        uniq.append(row["id"])
    for i in range(heavy):
        shards[2].append({"id": f"h{i}", "url": f"https://heavy.org/{i}", "text": _article(rng)})
        uniq.append(f"h{i}")
    groups: dict[str, list[list[str]]] = {k: [] for k in GROUPS}
    for kind, n in GROUPS.items():
        for g in range(n):
            size = 2 + g % 2
            base = _article(rng)
            ids = []
            for c in range(size):
                pid = f"{kind}{g}c{c}"
                if kind == "url":
                    url, text = _url_variants(f"dup{g}.example.org", f"q/{g}")[c], _article(rng)
                elif kind == "exact":
                    url = f"https://copies{c}.example.net/{g}"
                    text = base if c == 0 else ("  " + base.upper().replace(" ", "\n ", 7) + "\t")
                    if g == n - 1:  # a short page: only the exact check can see it
                        text = ["Solve for x.", "solve  FOR x.", "SOLVE for\nx."][c]
                else:
                    url = f"https://mirror{c}.example.com/{g}"
                    words = base.split()
                    if c:
                        words[50 * c] = f"changed{c}"
                    text = " ".join(words)
                # the original in shard g % SHARDS, each copy one or more shards further on
                shards[(g + 2 * c + 1) % SHARDS if c else g % SHARDS].append({"id": pid, "url": url, "text": text})
                ids.append(pid)
            groups[kind].append(ids)
    # copies must come after their original in input order (shard, then line)
    order = {r["id"]: (s, i) for s, rows in enumerate(shards) for i, r in enumerate(rows)}
    for kind in groups:
        for ids in groups[kind]:
            ids.sort(key=order.__getitem__)
    for s, rows in enumerate(shards):
        with open(folder / f"shard_{s}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    removed = {k: sum(len(ids) - 1 for ids in v) for k, v in groups.items()}
    return {"groups": groups, "unique": uniq, "removed": removed, "pages": sum(map(len, shards))}


if __name__ == "__main__":  # python tests/mining/planted.py OUT_DIR -> answer.json beside the shards
    answer = write_planted(sys.argv[1])
    Path(sys.argv[1], "answer.json").write_text(json.dumps(answer))
