"""Building, storing and reading packed SFT data (step 7 of the package
docstring): two parallel MMIDIDX datasets and a sidecar written last."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from megatron_dsm.data import indexed
from megatron_dsm.data.sft.examples import (
    SFTDataConfig,
    SFTDataError,
    Sample,
    apply_truncation,
    check_inputs,
    read_examples,
    sample_arrays,
    tokenize_example,
)
from megatron_dsm.data.sft.packing import Pack, pack_from_arrays, pack_samples, pack_to_batch
from megatron_dsm.data.tokenizer import build_tokenizer

SIDECAR_KIND = "megatron_dsm.sft.packed"
SIDECAR_VERSION = 1


def tokenize_all(paths: Sequence[str], tokenizer, cfg: SFTDataConfig, stats: dict,
                 total: int | None = None) -> list[Sample]:
    template = cfg.template()
    samples = []
    for msgs in tqdm(read_examples(paths, cfg), total=total, desc="tokenize", unit="ex",
                     disable=total is not None and total < 1000):
        samples.append(tokenize_example(msgs, tokenizer, template))
    stats["examples"] = len(samples)
    kept = list(apply_truncation(samples, cfg.seq_length, cfg.truncation, stats))
    stats["samples"] = len(kept)
    return kept


def _prefixes(prefix: str) -> tuple[str, str]:
    return prefix + ".tokens", prefix + ".loss_mask"


def write_packed(prefix: str, samples: Sequence[Sample], bins: Sequence[Sequence[int]],
                 seq_length: int, pad_id: int, tokenizer_info: dict | None = None,
                 extra: dict | None = None) -> dict:
    """Store packs as two parallel MMIDIDX datasets plus ``PREFIX.json``
    (package docstring, step 7).  Each file is renamed into place only when
    complete and the sidecar is written last, so a present sidecar means the
    whole set is complete.  Returns the sidecar content."""
    if not bins:
        raise SFTDataError(f"{prefix}: no samples to write (all dropped or empty input)")
    max_id = int(max(int(s.ids.max()) for s in samples)) if samples else 0
    vocab = (tokenizer_info or {}).get("vocab_size") or max_id + 1
    tok_dtype = indexed.optimal_dtype(max(vocab, max_id + 1, pad_id + 1))
    tok_prefix, mask_prefix = _prefixes(prefix)
    if os.path.exists(prefix + ".json"):  # stale sidecar would vouch for new partial files
        os.remove(prefix + ".json")
    n_tokens = n_targets = 0
    with indexed.IndexedDatasetWriter(tok_prefix, tok_dtype) as wt, \
            indexed.IndexedDatasetWriter(mask_prefix, np.uint8) as wm:
        for b in tqdm(bins, desc="write packs", unit="pack", disable=len(bins) < 1000):
            members = [samples[i] for i in b]
            lens = [len(s) for s in members]
            if sum(lens) > seq_length:
                raise ValueError(f"pack of {sum(lens)} tokens exceeds seq_length {seq_length}")
            ids = np.concatenate([s.ids for s in members])
            mask = np.concatenate([sample_arrays(s, pad_id)[2] for s in members])
            wt.add_document(ids, lens)
            wm.add_document(mask, lens)
            n_tokens += int(ids.size)
            n_targets += int(mask.sum())
    info = {
        "kind": SIDECAR_KIND, "version": SIDECAR_VERSION,
        "seq_length": seq_length, "pad_id": int(pad_id),
        "packs": len(bins), "samples": sum(len(b) for b in bins),
        "tokens": n_tokens, "target_tokens": n_targets,
        "packing_efficiency": n_tokens / (len(bins) * seq_length),
        "token_dtype": np.dtype(tok_dtype).name,
        "tokenizer": tokenizer_info or {},
    }
    info.update(extra or {})
    indexed.write_sidecar(prefix, info)
    return info


class PackedSFTDataset(torch.utils.data.Dataset):
    """Packs written by :func:`write_packed`, read through megatron-core's
    ``IndexedDataset``; item ``i`` is :func:`pack_to_batch` of pack ``i``."""

    def __init__(self, prefix: str, build_attention_mask: bool = True):
        self.prefix = str(prefix)
        info = indexed.read_sidecar(self.prefix)
        if info is None:
            raise SFTDataError(f"{self.prefix}.json not found: not a complete packed SFT dataset")
        if info.get("kind") != SIDECAR_KIND:
            raise SFTDataError(f"{self.prefix}.json: kind {info.get('kind')!r} is not {SIDECAR_KIND!r}")
        self.info = info
        self.seq_length = int(info["seq_length"])
        self.pad_id = int(info["pad_id"])
        self.build_attention_mask = build_attention_mask
        tok_prefix, mask_prefix = _prefixes(self.prefix)
        self._tok = indexed.open_dataset(tok_prefix)
        self._mask = indexed.open_dataset(mask_prefix)
        ti, mi = self._tok.index, self._mask.index
        if not (np.array_equal(ti.sequence_lengths, mi.sequence_lengths)
                and np.array_equal(ti.document_indices, mi.document_indices)):
            raise SFTDataError(f"{self.prefix}: tokens and loss_mask datasets disagree on sample boundaries")
        if len(ti.document_indices) - 1 != info["packs"]:
            raise SFTDataError(f"{self.prefix}: sidecar says {info['packs']} packs, index has "
                               f"{len(ti.document_indices) - 1}")

    def __len__(self) -> int:
        return len(self._tok.index.document_indices) - 1

    def _read(self, ds, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = ds.index
        s, e = int(idx.document_indices[i]), int(idx.document_indices[i + 1])
        lens = np.asarray(idx.sequence_lengths[s:e], dtype=np.int64)
        arr = ds.bin_reader.read(dtype=idx.dtype, count=int(lens.sum()),
                                 offset=int(idx.sequence_pointers[s]))
        return np.asarray(arr), lens

    def pack(self, i: int) -> Pack:
        if not 0 <= i < len(self):
            raise IndexError(f"pack {i} out of range 0..{len(self) - 1}")
        toks, lens = self._read(self._tok, i)
        mask, _ = self._read(self._mask, i)
        return pack_from_arrays(toks.astype(np.int64), mask, lens, self.seq_length, self.pad_id)

    def __getitem__(self, i: int) -> dict:
        batch = pack_to_batch(self.pack(i))
        if not self.build_attention_mask:
            del batch["attention_mask"]
        return batch


def build_sft_data(cfg: SFTDataConfig, tokenizer=None) -> dict:
    """jsonl -> packed indexed files (what tools/build_sft_data.py runs)."""
    if not cfg.input:
        raise SFTDataError("no --input files given")
    if not cfg.output_prefix:
        raise SFTDataError("no --output-prefix given")
    n_records = check_inputs(cfg.input, cfg)  # bad input fails here, before tokenising
    if n_records == 0:
        raise SFTDataError(f"{', '.join(map(str, cfg.input))}: no records")
    if tokenizer is None:
        tokenizer = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    if getattr(tokenizer, "eod", None) is None:
        raise SFTDataError("the tokenizer defines no end-of-document (eos) token; SFT needs one")
    pad_id = getattr(tokenizer, "pad", None)
    pad_id = int(tokenizer.eod if pad_id is None else pad_id)
    stats: dict = {}
    samples = tokenize_all(cfg.input, tokenizer, cfg, stats, total=n_records)
    bins = pack_samples(samples, cfg.seq_length, cfg.seed)
    tok_info = tokenizer.describe() if hasattr(tokenizer, "describe") else {
        "vocab_size": getattr(tokenizer, "vocab_size", None), "eod": int(tokenizer.eod)}
    extra = {"stats": stats, "inputs": [str(p) for p in cfg.input],
             "template": dataclasses.asdict(cfg.template()), "format": cfg.format,
             "truncation": cfg.truncation}
    return write_packed(cfg.output_prefix, samples, bins, cfg.seq_length, pad_id, tok_info, extra)
