"""The SFT overfit demo, shared by the fast and slow tests: a few hundred
GSM8K-style word problems with short worked answers, a small BPE trained on
them, packed SFT data written by the project's tools, a tiny model fine-tuned
through megatron_dsm.training.sft.run_sft, and greedy exact match of every
training response given its prompt."""
import json
import random
from pathlib import Path

NAMES = ["Tom", "Ann", "Bob", "Eve", "Sam", "Mia", "Leo", "Zoe"]
ITEMS = ["apples", "pens", "coins", "books", "cards", "shells"]


def examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, d = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
        who, it = rng.choice(NAMES), rng.choice(ITEMS)
        q = f"{who} has {a} {it}, gets {b} more, then {d} more. How many {it}?"
        r = f"{a} + {b} = {a + b}. {a + b} + {d} = {a + b + d}. The answer is {a + b + d}."
        out.append({"question": q, "response": r})
    return out


def build(tmp: Path, n: int, seq_length: int = 128, *, seed: int = 0, name: str = "packed", tok=None):
    """Write the jsonl, (unless given) a tokenizer.json trained on it, and the
    packed data; returns (prefix, tokenizer, conversations, sidecar)."""
    from megatron_dsm.data import sft as sft_data
    from tests.rm.helpers import small_tokenizer

    rows = examples(n, seed)
    src = tmp / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if tok is None:
        texts = [f"User: {r['question']}\n\nAssistant: {r['response']}" for r in rows]
        tok = small_tokenizer(texts, tmp / "tokenizer.json", vocab_size=400)
    cfg = sft_data.SFTDataConfig(input=[str(src)], output_prefix=str(tmp / name), seq_length=seq_length,
                                 format="pair")
    info = sft_data.build_sft_data(cfg, tokenizer=tok)
    convs = [sft_data.record_to_messages(r, cfg) for r in rows]
    return str(tmp / name), tok, convs, info
