"""Writing Megatron MMIDIDX indexed datasets (``PREFIX.bin`` / ``PREFIX.idx``).

The format is megatron-core's (``megatron.core.datasets.indexed_dataset``):

``.bin``  the token ids of every sequence back to back, in the index dtype;
``.idx``  ``b"MMIDIDX\\x00\\x00"``, version ``<Q`` 1, dtype code ``<B``,
          sequence count ``<Q``, document count ``<Q`` (documents + 1),
          sequence lengths int32, sequence byte offsets int64, document
          indices int64 (starting with 0; entry i+1 is the sequence index
          where document i ends).

The dtype is the one megatron-core's own builder gets in Megatron-LM's tool:
``DType.optimal_dtype(vocab_size)`` (uint16 below 65500 ids, else int32).
Reading always goes through megatron-core's ``IndexedDataset``.

Writes are crash-safe: both files are written under temporary names and
renamed only when complete, ``.bin`` first, then ``.idx``, then the
``PREFIX.json`` sidecar, so an ``.idx`` never sits beside a partial ``.bin``
and a present sidecar means the dataset is complete.

Unlike megatron-core's ``IndexedDatasetBuilder`` (a Python list per sequence
and a Python loop over the offsets) this writer keeps lengths in numpy chunks
and computes offsets with one cumulative sum; the bytes are the same.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from megatron_dsm.io import write_json

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
SIDECAR_VERSION = 1


# megatron-core's DType codes.  Spelled out here (and checked against
# megatron.core.datasets.indexed_dataset.DType by the tests) because importing
# megatron.core costs ~5 s, longer than tokenizing a small corpus.
DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5,
               np.float64: 6, np.float32: 7, np.uint16: 8}
# megatron-core's DType.optimal_dtype: uint16 when the vocabulary has fewer than 65500 ids.
UINT16_MAX_VOCAB = 65500


def optimal_dtype(vocab_size: int | None) -> type:
    """The token dtype megatron-core's ``DType.optimal_dtype`` picks for ``vocab_size``."""
    return np.uint16 if vocab_size is not None and vocab_size < UINT16_MAX_VOCAB else np.int32


def dtype_code(dtype) -> int:
    return DTYPE_CODES[np.dtype(dtype).type]


def read_index(prefix: str) -> dict:
    """The arrays of an ``.idx`` file (a light reader for merging and counting;
    training and tests read through megatron-core's IndexedDataset)."""
    path = prefix + ".idx"
    with open(path, "rb") as f:
        head = f.read(len(INDEX_HEADER) + 8 + 1 + 8 + 8)
    if len(head) < 34 or head[:9] != INDEX_HEADER:
        raise ValueError(f"{path}: not a Megatron MMIDIDX index")
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[9:])
    if version != INDEX_VERSION:
        raise ValueError(f"{path}: index version {version}, expected {INDEX_VERSION}")
    codes = {v: k for k, v in DTYPE_CODES.items()}
    if code not in codes:
        raise ValueError(f"{path}: unknown dtype code {code}")
    buf = np.memmap(path, mode="r", dtype=np.uint8)
    off = 34
    lengths = np.frombuffer(buf, dtype="<i4", count=n_seq, offset=off)
    off += 4 * n_seq
    pointers = np.frombuffer(buf, dtype="<i8", count=n_seq, offset=off)
    off += 8 * n_seq
    doc_idx = np.frombuffer(buf, dtype="<i8", count=n_doc, offset=off)
    return {"dtype": np.dtype(codes[code]), "lengths": lengths, "pointers": pointers,
            "document_indices": doc_idx}


def _tmp_name(path: str) -> str:
    return f"{path}.tmp{os.getpid()}"


def write_sidecar(prefix: str, info: dict) -> None:
    write_json(prefix + ".json", info, indent=1, sort_keys=True)


def read_sidecar(prefix: str) -> dict | None:
    p = Path(prefix + ".json")
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{p}: sidecar is not valid JSON") from None


def is_complete(prefix: str) -> bool:
    """True when .bin, .idx and the sidecar all exist (the sidecar is renamed last)."""
    return all(os.path.isfile(prefix + s) for s in (".bin", ".idx", ".json"))


class IndexedDatasetWriter:
    """Stream documents into ``prefix.bin``/``.idx`` under temporary names.

    ``add_document(ids, lengths)`` appends one document made of sequences of
    the given lengths (one sequence per document unless sentences are split).
    ``finalize()`` writes the index and renames both files into place;
    ``abort()`` (or leaving a ``with`` block by an exception) removes them.
    """

    def __init__(self, prefix: str, dtype) -> None:
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype)
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._bin_tmp = _tmp_name(self.prefix + ".bin")
        self._idx_tmp = _tmp_name(self.prefix + ".idx")
        self._bin = open(self._bin_tmp, "wb")
        self._lengths: list[np.ndarray] = []  # int32 chunks
        self._doc_ends: list[np.ndarray] = []  # int64 chunks: sequence count after each doc
        self._n_seq = 0
        self.documents = 0
        self.tokens = 0
        self._done = False

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finalize()

    def add_document(self, ids, lengths: Sequence[int] | None = None) -> None:
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"{self.prefix}: token id out of range for {self.dtype} "
                             f"(min {arr.min()}, max {arr.max()})")
        self._bin.write(arr.astype(self.dtype, copy=False).tobytes())
        lens = np.asarray([arr.size] if lengths is None else lengths, dtype=np.int32)
        if int(lens.sum()) != arr.size:
            raise ValueError(f"{self.prefix}: sequence lengths sum to {int(lens.sum())}, document has {arr.size} ids")
        self._lengths.append(lens)
        self._n_seq += lens.size
        self._doc_ends.append(np.asarray([self._n_seq], dtype=np.int64))
        self.documents += 1
        self.tokens += arr.size

    def add_batch(self, flat_ids: np.ndarray, seq_lengths: np.ndarray, seqs_per_doc: np.ndarray) -> None:
        """Append many documents at once: their ids concatenated, every sequence
        length, and how many sequences each document holds (fast path)."""
        flat = np.asarray(flat_ids)
        if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"{self.prefix}: token id out of range for {self.dtype}")
        self._bin.write(flat.astype(self.dtype, copy=False).tobytes())
        seq_lengths = np.asarray(seq_lengths, dtype=np.int32)
        self._lengths.append(seq_lengths)
        ends = self._n_seq + np.cumsum(np.asarray(seqs_per_doc, dtype=np.int64))
        self._doc_ends.append(ends)
        self._n_seq += int(seq_lengths.size)
        self.documents += int(len(seqs_per_doc))
        self.tokens += int(flat.size)

    def add_dataset(self, prefix: str) -> None:
        """Append every document of an existing indexed dataset (same dtype)."""
        idx = read_index(prefix)
        if idx["dtype"] != self.dtype:
            raise ValueError(f"{prefix}: dtype {idx['dtype']} differs from {self.dtype}")
        lens = np.array(idx["lengths"], dtype=np.int32)
        doc_idx = np.array(idx["document_indices"], dtype=np.int64)
        del idx
        self._lengths.append(lens)
        self._doc_ends.append(doc_idx[1:] + self._n_seq)
        self._n_seq += int(lens.size)
        self.documents += int(doc_idx.size - 1)
        self.tokens += int(lens.sum(dtype=np.int64))
        with open(prefix + ".bin", "rb") as f:
            shutil.copyfileobj(f, self._bin, 16 << 20)

    def finalize(self) -> None:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        doc_ends = np.concatenate(self._doc_ends) if self._doc_ends else np.zeros(0, np.int64)
        pointers = np.zeros(lengths.size, dtype=np.int64)
        if lengths.size > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_indices = np.concatenate([np.zeros(1, np.int64), doc_ends])
        with open(self._idx_tmp, "wb") as f:
            f.write(INDEX_HEADER)
            f.write(struct.pack("<Q", INDEX_VERSION))
            f.write(struct.pack("<B", dtype_code(self.dtype)))
            f.write(struct.pack("<Q", lengths.size))
            f.write(struct.pack("<Q", doc_indices.size))
            f.write(lengths.astype("<i4", copy=False).tobytes())
            f.write(pointers.astype("<i8", copy=False).tobytes())
            f.write(doc_indices.astype("<i8", copy=False).tobytes())
        # .bin first: a visible .idx always describes a complete .bin.
        os.replace(self._bin_tmp, self.prefix + ".bin")
        os.replace(self._idx_tmp, self.prefix + ".idx")
        self._done = True

    def abort(self) -> None:
        if not self._bin.closed:
            self._bin.close()
        for p in (self._bin_tmp, self._idx_tmp):
            if os.path.exists(p):
                os.remove(p)
        self._done = True


def open_dataset(prefix: str):
    """megatron-core's reader, with one clear line when the files are missing."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for suffix in (".bin", ".idx"):
        if not os.path.isfile(prefix + suffix):
            raise FileNotFoundError(f"{prefix}{suffix} not found")
    return IndexedDataset(prefix)


def dataset_counts(prefix: str) -> tuple[int, int]:
    """(documents, tokens) of an indexed dataset, read from its index."""
    if not os.path.isfile(prefix + ".bin"):
        raise FileNotFoundError(f"{prefix}.bin not found")
    if not os.path.isfile(prefix + ".idx"):
        raise FileNotFoundError(f"{prefix}.idx not found")
    idx = read_index(prefix)
    return int(idx["document_indices"].size - 1), int(idx["lengths"].sum(dtype=np.int64))


def iter_documents(prefix: str) -> Iterable[np.ndarray]:
    """Yield each document's token ids (its sequences concatenated).

    Copies, not views: megatron-core's reader unmaps its buffer when it is
    garbage-collected, and a view outliving it would point at freed memory."""
    ds = open_dataset(prefix)
    doc_idx = ds.index.document_indices
    lens = ds.index.sequence_lengths
    ptrs = ds.index.sequence_pointers
    for d in range(len(doc_idx) - 1):
        s, e = int(doc_idx[d]), int(doc_idx[d + 1])
        if e == s:
            yield np.zeros(0, dtype=ds.index.dtype)
            continue
        n = int(lens[s:e].sum())
        yield np.array(ds.bin_reader.read(dtype=ds.index.dtype, count=n, offset=int(ptrs[s])))
