"""A learnable synthetic corpus written with megatron-core's own
IndexedDatasetBuilder (so the training tests do not depend on the corpus
tooling): each document walks a fixed random successor table, with a little
noise, so an LM can drive its loss well below log(vocab)."""
import json
from pathlib import Path

import numpy as np


def write_corpus(prefix: str | Path, *, vocab: int = 256, docs: int = 200, doc_len: int = 300,
                 seed: int = 0, noise: float = 0.05, eod: int = 0) -> str:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    succ = rng.integers(1, vocab, size=vocab)
    b = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    import torch

    for _ in range(docs):
        t = int(rng.integers(1, vocab))
        seq = []
        for _ in range(doc_len):
            seq.append(t)
            t = int(succ[t]) if rng.random() > noise else int(rng.integers(1, vocab))
        seq.append(eod)
        b.add_document(torch.tensor(seq, dtype=torch.int64), [len(seq)])
    b.finalize(prefix + ".idx")
    Path(prefix + ".json").write_text(json.dumps({"eod": eod, "documents": docs,
                                                  "tokens": docs * (doc_len + 1)}))
    return prefix
