"""Training data: megatron-core's BlendedMegatronDatasetBuilder + GPTDataset
over Megatron indexed datasets, validated before anything is built, and a
resumable batch order.

Validation comes first because megatron-core's GPTDataset never finishes
building an index over a dataset with zero tokens, and a token id at or above
the vocab size only fails deep inside the embedding (or not at all on GPU).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dsm.config import ConfigError
from megatron_dsm.data.indexed import read_sidecar
from megatron_dsm.data.mixture import load_mixture, validate_prefixes


@dataclasses.dataclass
class Blend:
    prefixes: list[str]
    weights: list[float] | None

    def as_megatron(self):
        return (self.prefixes, self.weights)


def parse_data_path(items: list[str] | str) -> Blend:
    """Megatron-LM's --data-path: ``prefix`` or ``w1 p1 w2 p2 ...``."""
    if isinstance(items, str):
        items = items.split()
    items = [x for it in items for x in str(it).split()]
    if not items:
        raise ConfigError("--data-path is empty")
    if len(items) == 1:
        return Blend([items[0]], None)
    if len(items) % 2:
        raise ConfigError(f"--data-path must be 'weight prefix' pairs, got {len(items)} items: {items}")
    weights, prefixes = [], []
    for w, p in zip(items[0::2], items[1::2]):
        try:
            wf = float(w)
        except ValueError:
            raise ConfigError(f"--data-path: weight {w!r} before {p!r} is not a number") from None
        if not wf > 0:
            raise ConfigError(f"--data-path: weight {w} for {p} must be > 0")
        weights.append(wf)
        prefixes.append(p)
    return Blend(prefixes, weights)


def blend_from_mixture(path: str) -> Blend:
    prefixes, weights = load_mixture(path).to_blend()
    return Blend(list(prefixes), list(weights) if weights is not None else None)


def tokenizer_facts(prefix: str) -> dict:
    """vocab_size / eod recorded by tools/preprocess_data.py ({} if absent)."""
    try:
        side = read_sidecar(prefix) or {}
    except ValueError as e:
        raise ConfigError(str(e)) from None
    tok = side.get("tokenizer") if isinstance(side.get("tokenizer"), dict) else {}
    out = {k: tok[k] for k in ("vocab_size", "eod") if tok.get(k) is not None}
    if "eod" in side and "eod" not in out:
        out["eod"] = int(side["eod"])
    return out


def validate_blend(blend: Blend, vocab_size: int, *, check_token_ids: bool = True,
                   fingerprint: str | None = None) -> dict:
    """Check every prefix before building anything (one clear line on the
    first problem). Returns per-prefix {documents, tokens}."""
    try:
        infos = validate_prefixes(blend.prefixes, blend.weights, fingerprint, require_sidecar=False)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"data: {e}") from None
    stats = {}
    for info in infos:
        prefix = info["prefix"]
        if check_token_ids:
            max_id = _max_token_id(IndexedDataset(prefix, mmap=True))
            if max_id >= vocab_size:
                raise ConfigError(f"data prefix {prefix}: token id {max_id} >= model vocab size "
                                  f"{vocab_size} (wrong tokenizer or model?)")
        stats[prefix] = {"documents": info["documents"], "tokens": info["tokens"]}
    return stats


def _max_token_id(ds) -> int:
    """Max id over the whole .bin, streamed in chunks (no full copy)."""
    arr = ds.bin_reader._bin_buffer if hasattr(ds.bin_reader, "_bin_buffer") else None
    dtype = ds.index.dtype
    if arr is not None:
        flat = np.frombuffer(arr, dtype=dtype)
    else:
        flat = np.memmap(ds.path_prefix + ".bin", dtype=dtype, mode="r")
    m = 0
    step = 1 << 24
    for i in range(0, flat.shape[0], step):
        m = max(m, int(flat[i:i + step].max()))
    return m


class _SpecialTokens:
    """What GPTDataset needs from a tokenizer: vocab size, eod, pad."""

    def __init__(self, vocab_size: int, eod: int):
        self.vocab_size = vocab_size
        self.eod = eod
        self.special_tokens_dict = {}
        # GPTDataset hashes this into its index-cache name.
        self.unique_identifiers = {"class": "SpecialTokens", "vocab_size": vocab_size, "eod": eod}

    @property
    def pad(self):  # GPTDataset falls back to an id that never occurs
        raise AttributeError("pad")


def build_datasets(blend: Blend, *, seq_length: int, seed: int, split: str,
                   num_samples: list[int], cache_dir: str, vocab_size: int, eod: int):
    """train/valid/test datasets from megatron-core's builder."""
    cfg = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=blend.as_megatron(),
        split=split,
        path_to_cache=cache_dir,
        tokenizer=_SpecialTokens(vocab_size, eod),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        mid_level_dataset_surplus=0.005,
    )
    builder = BlendedMegatronDatasetBuilder(GPTDataset, num_samples, lambda: True, cfg)
    return builder.build()


class BatchOrder:
    """Which samples each data-parallel rank reads at each step.

    Step ``t`` uses samples ``[t*G, (t+1)*G)`` of the dataset (G = global
    batch); data-parallel rank ``r`` takes micro-batches from its contiguous
    slice of that range.  Resume only needs ``consumed_samples``.  Because the
    global order does not depend on DP, DP=1 and DP=2 see the same global batch.
    """

    def __init__(self, dataset, *, global_batch: int, micro_batch: int, dp_rank: int,
                 dp_size: int, consumed_samples: int = 0):
        self.dataset = dataset
        self.G, self.m = global_batch, micro_batch
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.consumed_samples = consumed_samples

    def microbatches(self) -> Iterator[dict]:
        """The micro-batches of the next step for this rank; advances the position."""
        start = self.consumed_samples
        per_rank = self.G // self.dp_size
        base = start + self.dp_rank * per_rank
        n = len(self.dataset)
        out = []
        for j in range(0, per_rank, self.m):
            idx = [(base + j + k) % n for k in range(self.m)]
            samples = [self.dataset[i] for i in idx]
            out.append(collate(samples))
        self.consumed_samples += self.G
        return iter(out)


def collate(samples: list[dict]) -> dict:
    keys = ("tokens", "labels", "loss_mask", "position_ids")
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in keys if k in samples[0]}
