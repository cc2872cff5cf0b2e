"""The MMIDIDX writer: same bytes as megatron-core's own builder, readable by
its IndexedDataset, dtype by megatron's rule, nothing left by a failed write."""

import os

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from megatron_dsm.data import indexed

DOCS = [[5, 6, 7], [1], [65000, 2, 3, 4], [9, 9]]


@pytest.mark.parametrize("vocab", [259, 50280, 65499, 65500, 100000])
def test_dtype_rule_matches_megatron(vocab):
    assert indexed.optimal_dtype(vocab) is DType.optimal_dtype(vocab)


def test_dtype_codes_match_megatron():
    for dt, code in indexed.DTYPE_CODES.items():
        assert DType.code_from_dtype(dt) == code


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_bytes_equal_megatron_builder(tmp_path, dtype):
    ref = str(tmp_path / "ref")
    b = IndexedDatasetBuilder(ref + ".bin", dtype=dtype)
    for d in DOCS:
        b.add_document(torch.tensor(d), [len(d)])
    b.add_document(torch.tensor([4, 4, 4, 8]), [1, 3])  # a document of two sentences
    b.finalize(ref + ".idx")

    ours = str(tmp_path / "ours")
    with indexed.IndexedDatasetWriter(ours, dtype) as w:
        for d in DOCS[:2]:
            w.add_document(d)
        flat = np.array(DOCS[2] + DOCS[3] + [4, 4, 4, 8])
        w.add_batch(flat, np.array([4, 2, 1, 3]), np.array([1, 1, 2]))
    for suffix in (".bin", ".idx"):
        assert open(ref + suffix, "rb").read() == open(ours + suffix, "rb").read()
    ds = IndexedDataset(ours)
    assert [ds[i].tolist() for i in range(len(ds))] == DOCS + [[4], [4, 4, 8]]
    assert ds.index.document_indices.tolist() == [0, 1, 2, 3, 4, 6]
    assert [d.tolist() for d in indexed.iter_documents(ours)] == DOCS + [[4, 4, 4, 8]]
    assert indexed.dataset_counts(ours) == (5, 14)


def test_add_dataset_concatenates(tmp_path):
    parts = []
    for i, docs in enumerate([DOCS[:2], DOCS[2:]]):
        p = str(tmp_path / f"p{i}")
        with indexed.IndexedDatasetWriter(p, np.uint16) as w:
            for d in docs:
                w.add_document(d)
        parts.append(p)
    whole = str(tmp_path / "whole")
    with indexed.IndexedDatasetWriter(whole, np.uint16) as w:
        for d in DOCS:
            w.add_document(d)
    merged = str(tmp_path / "merged")
    with indexed.IndexedDatasetWriter(merged, np.uint16) as w:
        for p in parts:
            w.add_dataset(p)
    for suffix in (".bin", ".idx"):
        assert open(whole + suffix, "rb").read() == open(merged + suffix, "rb").read()
    with pytest.raises(ValueError, match="dtype"):
        with indexed.IndexedDatasetWriter(str(tmp_path / "x"), np.int32) as w:
            w.add_dataset(parts[0])


def test_failed_write_leaves_nothing(tmp_path):
    prefix = str(tmp_path / "broken")
    with pytest.raises(RuntimeError):
        with indexed.IndexedDatasetWriter(prefix, np.uint16) as w:
            w.add_document([1, 2, 3])
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_out_of_range_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="out of range for uint16"):
        with indexed.IndexedDatasetWriter(str(tmp_path / "x"), np.uint16) as w:
            w.add_document([70000])
    assert os.listdir(tmp_path) == []


def test_bad_index_is_reported(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"garbage" * 10)
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not a Megatron MMIDIDX index"):
        indexed.read_index(str(tmp_path / "bad"))
