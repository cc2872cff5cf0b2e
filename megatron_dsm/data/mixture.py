"""Data mixtures: named sources with weights -> megatron-core's ``blend``.

A mixture file is YAML::

    tokenizer_fingerprint: 4f54bc...   # optional: the model's tokenizer
    sources:
      - name: deepseekmath_corpus
        weight: 56                     # any positive scale; normalised
        prefixes:                      # prefixes or globs of prefixes
          - ${DSM_DATA}/dsm_corpus/shard_*_text_document

Relative prefixes are relative to the mixture file's folder; ``$VARS`` are
expanded.  A source with several prefixes splits its weight over them in
proportion to their token counts, so the source as a whole gets its weight.

Validation happens before any dataset is built, because megatron-core's
GPTDataset never finishes on a dataset with zero tokens and a tokenizer
mismatch only shows up as a silently wrong model: every weight > 0, every
prefix has a non-empty ``.bin``/``.idx`` and a ``PREFIX.json`` sidecar, all
sidecars carry one tokenizer fingerprint, and it matches the model's.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from pathlib import Path

import yaml

from megatron_dsm.data import indexed


@dataclasses.dataclass
class Source:
    name: str
    weight: float
    patterns: list[str]
    prefixes: list[str] = dataclasses.field(default_factory=list)
    tokens: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Mixture:
    path: str
    sources: list[Source]
    tokenizer_fingerprint: str | None = None

    @property
    def shares(self) -> dict[str, float]:
        """Each source's intended share of samples (weights normalised)."""
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}

    def to_blend(self) -> tuple[list[str], list[float]]:
        """(prefixes, weights) for ``BlendedMegatronDatasetConfig(blend=...)``;
        weights sum to 1.  Needs a validated mixture (``load_mixture`` does it)."""
        prefixes: list[str] = []
        weights: list[float] = []
        for src, share in zip(self.sources, self.shares.values()):
            if not src.prefixes:
                raise ValueError(f"{self.path}: source {src.name!r} has no resolved prefixes (validate first)")
            total = sum(src.tokens) if src.tokens else 0
            for i, p in enumerate(src.prefixes):
                frac = (src.tokens[i] / total) if total else 1.0 / len(src.prefixes)
                prefixes.append(p)
                weights.append(share * frac)
        return prefixes, weights

    def source_of(self) -> list[str]:
        """Source name of each blend entry, aligned with ``to_blend()``."""
        return [s.name for s in self.sources for _ in s.prefixes]


def _fail(where: str, what: str):
    raise ValueError(f"{where}: {what}")


def parse_mixture(path: str | os.PathLike) -> Mixture:
    """Read and check the file's structure; prefixes are not resolved yet."""
    p = Path(path)
    if not p.is_file():
        _fail(str(p), "mixture file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        _fail(str(p), f"invalid YAML ({str(e).splitlines()[0]})")
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        _fail(str(p), "expected a mapping with a non-empty 'sources' list")
    sources = []
    names = set()
    for i, s in enumerate(data["sources"]):
        where = f"{p}: sources[{i}]"
        if not isinstance(s, dict):
            _fail(where, "must be a mapping with name, weight, prefixes")
        name = str(s.get("name", f"source{i}"))
        if name in names:
            _fail(where, f"duplicate source name {name!r}")
        names.add(name)
        w = s.get("weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            _fail(f"{where} ({name})", f"weight must be a number > 0, got {w!r}")
        pats = s.get("prefixes", s.get("prefix"))
        if isinstance(pats, str):
            pats = [pats]
        if not isinstance(pats, list) or not pats or not all(isinstance(x, str) and x for x in pats):
            _fail(f"{where} ({name})", "prefixes must be a non-empty list of paths or globs")
        sources.append(Source(name, float(w), list(pats)))
    fp = data.get("tokenizer_fingerprint")
    return Mixture(str(p), sources, str(fp) if fp else None)


def _resolve(pattern: str, base: Path) -> list[str]:
    pat = os.path.expandvars(os.path.expanduser(pattern))
    if not os.path.isabs(pat):
        pat = str(base / pat)
    if glob.has_magic(pat):
        hits = sorted({m[:-len(".idx")] for m in glob.glob(pat + ".idx")})
        return hits
    return [pat]


def validate_prefixes(prefixes, weights=None, tokenizer_fingerprint: str | None = None,
                      require_sidecar: bool = True) -> list[dict]:
    """Raise one ValueError line on the first problem; return each prefix's sidecar.

    Checks: weights (if given) are > 0 and as many as prefixes; each prefix
    has ``.bin``, ``.idx`` and ``.json``; it holds at least one token; all
    sidecars carry the same tokenizer fingerprint; it equals
    ``tokenizer_fingerprint`` when that is given.  With
    ``require_sidecar=False`` a prefix without ``.json`` (e.g. from
    Megatron-LM's own tool) is accepted and only its size is checked.
    """
    prefixes = [str(p) for p in prefixes]
    if not prefixes:
        raise ValueError("blend has no prefixes")
    if weights is not None:
        weights = list(weights)
        if len(weights) != len(prefixes):
            raise ValueError(f"blend has {len(prefixes)} prefixes but {len(weights)} weights")
        for w, p in zip(weights, prefixes):
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
                raise ValueError(f"{p}: weight must be > 0, got {w!r}")
    infos = []
    first_fp = None
    for p in prefixes:
        for suffix in (".bin", ".idx"):
            if not os.path.isfile(p + suffix):
                raise ValueError(f"{p}: missing {p}{suffix}")
        side = indexed.read_sidecar(p)
        if side is None and not require_sidecar:
            # e.g. made by Megatron-LM's own tool: no fingerprint to compare
            docs, tokens = indexed.dataset_counts(p)
            if tokens == 0 or docs == 0:
                raise ValueError(f"{p}: dataset is empty ({docs} documents, {tokens} tokens); "
                                 f"megatron-core's GPTDataset would never finish building")
            infos.append({"documents": docs, "tokens": tokens, "prefix": p})
            continue
        if side is None:
            raise ValueError(f"{p}: missing {p}.json sidecar (write it with tools/preprocess_data.py "
                             f"or tools/merge_datasets.py)")
        docs, tokens = indexed.dataset_counts(p)
        if tokens == 0 or docs == 0:
            raise ValueError(f"{p}: dataset is empty ({docs} documents, {tokens} tokens); "
                             f"megatron-core's GPTDataset would never finish building")
        fp = side.get("fingerprint") or (side.get("tokenizer") or {}).get("fingerprint")
        if not fp and not require_sidecar:
            infos.append({**side, "documents": docs, "tokens": tokens, "prefix": p})
            continue
        if not fp:
            raise ValueError(f"{p}.json: no tokenizer fingerprint")
        if first_fp is None:
            first_fp = (fp, p)
        elif fp != first_fp[0]:
            raise ValueError(f"{p}: tokenizer fingerprint {fp[:12]} differs from {first_fp[1]} "
                             f"({first_fp[0][:12]}); all sources must share one tokenizer")
        if tokenizer_fingerprint is not None and fp != tokenizer_fingerprint:
            raise ValueError(f"{p}: made with tokenizer {fp[:12]}, but the model's tokenizer is "
                             f"{tokenizer_fingerprint[:12]}")
        infos.append({**side, "documents": docs, "tokens": tokens, "prefix": p})
    return infos


def load_mixture(path: str | os.PathLike, tokenizer_fingerprint: str | None = None) -> Mixture:
    """Parse, resolve globs and validate a mixture file."""
    mix = parse_mixture(path)
    base = Path(mix.path).resolve().parent
    all_prefixes = []
    for src in mix.sources:
        resolved: list[str] = []
        for pat in src.patterns:
            hits = _resolve(pat, base)
            if not hits:
                raise ValueError(f"{mix.path}: source {src.name!r}: {pat!r} matches no dataset (.idx)")
            resolved.extend(h for h in hits if h not in resolved)
        src.prefixes = resolved
        all_prefixes.extend(resolved)
    seen = set()
    for p in all_prefixes:
        if p in seen:
            raise ValueError(f"{mix.path}: prefix {p} is listed in more than one place")
        seen.add(p)
    fp = tokenizer_fingerprint or mix.tokenizer_fingerprint
    try:
        infos = validate_prefixes(all_prefixes, None, fp)
    except ValueError as e:
        raise ValueError(f"{mix.path}: {e}") from None
    by_prefix = {i["prefix"]: i["tokens"] for i in infos}
    for src in mix.sources:
        src.tokens = [by_prefix[p] for p in src.prefixes]
    return mix


class _SidecarTokenizerFacts:
    """The three tokenizer facts GPTDataset reads (vocab size, eod, pad),
    taken from the datasets' sidecar so stats need no tokenizer file."""

    def __init__(self, info: dict):
        tok = info.get("tokenizer") or {}
        self.vocab_size = tok.get("vocab_size")
        self.eod = tok.get("eod")
        self.pad = tok.get("pad") if tok.get("pad") is not None else -1
        # megatron-core hashes the config (tokenizer included) to name its caches
        self.unique_identifiers = {"class": "sidecar", "fingerprint": tok.get("fingerprint"),
                                   "vocab_size": self.vocab_size, "eod": self.eod, "pad": self.pad}


def realised_shares(mix: Mixture, samples: int, seq_length: int = 256, seed: int = 1234,
                    cache_dir: str | None = None) -> dict[str, float]:
    """Build the blend with megatron-core's BlendedMegatronDatasetBuilder and
    count which source each of the first ``samples`` training samples comes
    from (the ``dataset_id`` BlendedDataset returns with every sample).

    megatron-core's BlendedDataset calls ``torch.distributed.get_rank()``
    when it caches its indices, so when no process group exists this opens a
    one-process gloo group for the duration (CPU only, no network beyond a
    file store) and closes it again.
    """
    import tempfile

    import numpy as np
    import torch
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    prefixes, weights = mix.to_blend()
    side = indexed.read_sidecar(prefixes[0]) or {}
    owns_group = False
    with tempfile.TemporaryDirectory(prefix="dsm_blend_") as tmp:
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
            owns_group = True
        try:
            cfg = GPTDatasetConfig(
                random_seed=seed, sequence_length=seq_length, blend=(prefixes, weights), split="1,0,0",
                path_to_cache=cache_dir or os.path.join(tmp, "cache"), tokenizer=_SidecarTokenizerFacts(side),
                reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                mmap_bin_files=True)
            train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, 0, 0], lambda: True, cfg).build()
            ids = np.fromiter((int(train[i]["dataset_id"]) for i in range(samples)), dtype=np.int64, count=samples)
        finally:
            if owns_group:
                torch.distributed.destroy_process_group()
    counts = np.bincount(ids, minlength=len(prefixes))
    shares: dict[str, float] = {s.name: 0.0 for s in mix.sources}
    for name, c in zip(mix.source_of(), counts):
        shares[name] += c / samples
    return shares
