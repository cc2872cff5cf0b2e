"""Dedup, in-memory method: exact URL / text and MinHash near-duplicate counts on constructed documents."""

from __future__ import annotations

import random

import pytest

from megatron_dsm.config import ConfigError
from megatron_dsm.mining import dedup


def _article(seed: int, n: int = 300) -> str:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    return " ".join(rng.choice(vocab) for _ in range(n))


def _docs():
    a, b, c, d = (_article(s) for s in range(4))
    words = a.split()
    near_a = " ".join(words[:150] + ["changed"] + words[151:])  # one word of 300 replaced
    far_b = " ".join(b.split()[:100] + _article(99, 200).split())  # a third shared: not near
    return [
        ("https://Example.com/p/1", a, None),
        ("https://example.com/p/1/#comments", "something else entirely " * 5, "url"),  # same URL
        ("https://example.com:443/p/1", c, "url"),  # default port: same URL
        ("https://example.com/p/2", "  " + a.upper().replace(" ", "\n ", 20) + "\t", "exact"),
        ("https://example.com/p/3", near_a, "near"),
        ("https://example.com/p/4", b, None),
        ("https://example.com/p/5", far_b, None),
        ("https://example.com/p/6?id=7", d, None),
        ("https://example.com/p/6?id=8", d + " x+y", "near"),  # query kept (new URL); 2 words added
        ("https://example.com/p/7", d + " x-y", "near"),
        (None, c, None),  # no URL; text first seen here (the URL duplicate above was dropped)
    ]


def test_dedup_counts_on_constructed_docs():
    core = dedup.Deduplicator(dedup.DedupConfig(method="memory", near_threshold=0.8))
    got = [core.check(text, url) for url, text, _ in _docs()]
    assert got == [want for *_, want in _docs()]
    assert core.counts == {"documents": 11, "kept": 5, "url": 2, "exact": 1, "near": 3}


def test_switches_and_threshold():
    docs = _docs()
    only_exact = dedup.Deduplicator(dedup.DedupConfig(method="memory", url=False, near=False))
    reasons = [only_exact.check(t, u) for u, t, _ in docs]
    # without the URL check the page at :443 (text c) is kept, so the last one is an exact copy of it
    assert reasons.count("exact") == 2 and reasons.count("url") == reasons.count("near") == 0
    # one word of 300 changed: 5-shingle Jaccard 291/301 = 0.967, under a 0.98 threshold
    strict = dedup.Deduplicator(dedup.DedupConfig(method="memory", near_threshold=0.98))
    assert [strict.check(t, u) for u, t, _ in docs][4] is None
    no_near = dedup.Deduplicator(dedup.DedupConfig(method="memory", near=False))
    assert [no_near.check(t, u) for u, t, _ in docs].count("near") == 0


def test_normalisation_by_hand():
    assert dedup.normalize_url("HTTP://Www.A.org:80/x/?q=1#top") == "http://www.a.org/x?q=1"
    assert dedup.normalize_url("https://a.org/") == "https://a.org"
    assert dedup.normalize_text("  Hello \n\t WORLD ") == "hello world"
    assert dedup.text_key("x+y") != dedup.text_key("x-y")
    assert dedup.shingles("A b c", 5) == {b"a b c"}
    assert dedup.shingles("a b c d", 2) == {b"a b", b"b c", b"c d"}


def test_datatrove_step_stats():
    from datatrove.data import Document

    docs = [Document(text=t, id=str(i), metadata={"url": u} if u else {}) for i, (u, t, _) in enumerate(_docs())]
    step = dedup.CorpusDedup(dedup.DedupConfig(method="memory"))
    kept = [d.id for d in step.run(iter(docs))]
    assert kept == ["0", "5", "6", "7", "10"]
    stats = {k: v.total for k, v in step.stats.stats.items()}
    assert stats == {"documents": 11, "kept": 5, "dropped_url": 2, "dropped_exact": 1, "dropped_near": 3}


def test_bad_config():
    with pytest.raises(ConfigError, match="near_threshold"):
        dedup.DedupConfig(near_threshold=0)
    with pytest.raises(ConfigError, match="minhash_perm"):
        dedup.DedupConfig(minhash_perm=1)
    with pytest.raises(ConfigError, match="method"):
        dedup.DedupConfig(method="bloom")
    with pytest.raises(ConfigError, match="minhash_buckets"):
        dedup.DedupConfig(minhash_buckets=0)
    with pytest.raises(ConfigError, match="no LSH banding for near_threshold=0.99"):
        dedup.Deduplicator(dedup.DedupConfig(method="memory", near_threshold=0.99))
