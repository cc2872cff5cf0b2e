#!/usr/bin/env python
"""Documents, tokens and a document-length histogram per indexed dataset, or
the realised per-source sample shares of a mixture.

    python tools/dataset_stats.py out/web_text_document [more prefixes...]
    python tools/dataset_stats.py --mixture examples/configs/dsm_mixture.yaml --samples 10000

The mixture mode builds the blend with megatron-core's
BlendedMegatronDatasetBuilder (see megatron_dsm.data.mixture.realised_shares)
and prints, per source, the target share, the share of samples it actually
got and the difference in percentage points.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

import numpy as np  # noqa: E402

from megatron_dsm.data import indexed  # noqa: E402


def length_histogram(lengths: np.ndarray) -> list[tuple[int, int, int]]:
    """(low, high, count) over power-of-two buckets [1,2), [2,4), ..."""
    if lengths.size == 0:
        return []
    top = int(np.ceil(np.log2(max(int(lengths.max()), 1) + 1)))
    edges = [0] + [2 ** i for i in range(0, top + 1)]
    counts, _ = np.histogram(lengths, bins=edges)
    return [(lo, hi, int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts) if c]


def prefix_stats(prefix: str) -> dict:
    idx = indexed.read_index(prefix)
    seq = np.asarray(idx["lengths"], dtype=np.int64)
    doc = np.asarray(idx["document_indices"], dtype=np.int64)
    ends = np.concatenate([[0], np.cumsum(seq)])
    doc_tokens = ends[doc[1:]] - ends[doc[:-1]]
    return {"prefix": prefix, "documents": int(doc_tokens.size), "sequences": int(seq.size),
            "tokens": int(seq.sum()), "dtype": idx["dtype"].name,
            "mean": float(doc_tokens.mean()) if doc_tokens.size else 0.0,
            "median": float(np.median(doc_tokens)) if doc_tokens.size else 0.0,
            "max": int(doc_tokens.max()) if doc_tokens.size else 0,
            "histogram": length_histogram(doc_tokens)}


def print_prefix(s: dict) -> None:
    print(f"{s['prefix']}: {s['documents']:,} documents, {s['sequences']:,} sequences, {s['tokens']:,} tokens "
          f"({s['dtype']}); tokens/doc mean {s['mean']:.1f} median {s['median']:.0f} max {s['max']:,}")
    width = max((c for _, _, c in s["histogram"]), default=1)
    for lo, hi, c in s["histogram"]:
        bar = "#" * max(1, round(40 * c / width))
        print(f"  [{lo:>8,}, {hi:>8,}) {c:>8,} {bar}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prefixes", nargs="*", help="indexed dataset prefixes (PREFIX.bin/.idx)")
    ap.add_argument("--mixture", help="mixture YAML: print realised shares")
    ap.add_argument("--samples", type=int, default=10000, help="samples drawn from the blend (default 10000)")
    ap.add_argument("--seq-length", type=int, default=256, help="sequence length of the GPT samples")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    if not args.prefixes and not args.mixture:
        ap.error("give dataset prefixes and/or --mixture FILE")
    try:
        for p in args.prefixes:
            for suffix in (".bin", ".idx"):
                if not os.path.isfile(p + suffix):
                    raise ValueError(f"{p}: missing {p}{suffix}")
            print_prefix(prefix_stats(p))
        if args.mixture:
            from megatron_dsm.data.mixture import load_mixture, realised_shares

            mix = load_mixture(args.mixture)
            for src in mix.sources:
                for p in src.prefixes:
                    if p not in args.prefixes:
                        print_prefix(prefix_stats(p))
            got = realised_shares(mix, args.samples, args.seq_length, args.seed)
            print(f"realised shares over {args.samples:,} samples ({args.mixture}):")
            print(f"  {'source':<28} {'target':>8} {'realised':>9} {'diff pp':>8}")
            worst = 0.0
            for name, want in mix.shares.items():
                diff = 100 * (got[name] - want)
                worst = max(worst, abs(diff))
                print(f"  {name:<28} {100 * want:>7.2f}% {100 * got[name]:>8.2f}% {diff:>+8.2f}")
            print(f"max |realised - target| = {worst:.2f} pp")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
