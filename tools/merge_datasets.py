#!/usr/bin/env python
"""Concatenate indexed datasets (shards) into one prefix, in the order given.

    python tools/merge_datasets.py --input out/shard_*_text_document --output-prefix out/all_text_document
    python tools/merge_datasets.py --input-dir out/shards --output-prefix out/all_text_document

Every input must have the same dtype and, when sidecars exist, the same
tokenizer fingerprint; a sidecar with the merged counts and sources is
written beside the output.  Files are written under temporary names and
renamed when complete.
"""

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megatron_dsm.data import indexed  # noqa: E402


def find_inputs(inputs: list[str], input_dir: str | None) -> list[str]:
    prefixes: list[str] = []
    for item in inputs:
        base = item[:-4] if item.endswith((".bin", ".idx")) else item
        hits = sorted(m[:-4] for m in glob.glob(base + ".idx")) if glob.has_magic(base) else [base]
        if not hits:
            raise ValueError(f"--input {item}: matches no .idx file")
        prefixes.extend(hits)
    if input_dir:
        hits = sorted(os.path.join(input_dir, f[:-4]) for f in os.listdir(input_dir) if f.endswith(".idx"))
        if not hits:
            raise ValueError(f"--input-dir {input_dir}: holds no .idx files")
        prefixes.extend(hits)
    return prefixes


def merge(prefixes: list[str], output_prefix: str) -> dict:
    if not prefixes:
        raise ValueError("no input datasets given")
    if output_prefix in prefixes:
        raise ValueError(f"{output_prefix}: output prefix is also an input")
    dtypes, fps, sources, rejected = set(), set(), [], 0
    sides = []
    for p in prefixes:
        for suffix in (".bin", ".idx"):
            if not os.path.isfile(p + suffix):
                raise ValueError(f"{p}: missing {p}{suffix}")
        dtypes.add(indexed.read_index(p)["dtype"].name)
        side = indexed.read_sidecar(p)
        sides.append(side)
        if side:
            fps.add(side.get("fingerprint"))
            sources.extend(side.get("sources", [p]))
            rejected += int(side.get("rejected", 0))
        else:
            sources.append(p)
    if len(dtypes) > 1:
        raise ValueError(f"inputs have different dtypes {sorted(dtypes)}; they come from different vocabularies")
    if len(fps) > 1 or (fps and any(s is None for s in sides)):
        raise ValueError("inputs were made with different tokenizers (fingerprints differ or a sidecar is missing)")
    with indexed.IndexedDatasetWriter(output_prefix, dtypes.pop()) as w:
        for p in prefixes:
            w.add_dataset(p)
    info = {"version": indexed.SIDECAR_VERSION, "documents": w.documents, "tokens": w.tokens,
            "dtype": str(w.dtype), "merged_from": prefixes, "sources": sources, "rejected": rejected}
    first = next((s for s in sides if s), None)
    if first:
        for k in ("tokenizer", "fingerprint", "json_key", "level", "append_eod"):
            if k in first:
                info[k] = first[k]
    indexed.write_sidecar(output_prefix, info)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="*", default=[], help="prefixes or globs of prefixes, merged in this order")
    ap.add_argument("--input-dir", help="merge every dataset in this folder (sorted by name)")
    ap.add_argument("--output-prefix", required=True)
    args = ap.parse_args(argv)
    try:
        info = merge(find_inputs(args.input, args.input_dir), args.output_prefix)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {len(info['merged_from'])} datasets into {args.output_prefix}: "
          f"{info['documents']:,} documents, {info['tokens']:,} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
