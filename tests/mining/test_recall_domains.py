"""Recall selection, domain discovery and URL-path annotation on hand-built inputs."""

import pytest

from megatron_dsm.mining.domains import discover, domain_of, read_domains, write_domains
from megatron_dsm.mining.recall import (
    NOT_COUNTED,
    IndexRow,
    TokenCounting,
    fill_estimates,
    overlap,
    read_index,
    sample_unit,
    select,
    write_index,
)
from megatron_dsm.mining.url_paths import annotate, expansion_ids, path_prefixes, read_accepted, write_tsv


def rows():
    return [IndexRow("a", 0.9, 100, 400, "https://m.org/q/1", "A"),
            IndexRow("b", 0.8, 50, 200, "https://m.org/q/2", "B"),
            IndexRow("c", 0.7, 60, 240, "https://m.org/blog/x", ""),
            IndexRow("d", 0.4, 10, 40, "https://www.m.org/q/3", ""),
            IndexRow("e", 0.95, 5, 20, "https://other.com/p", "E")]


def test_select_threshold_and_token_budget():
    assert select(rows(), threshold=0.5) == {"a", "b", "c", "e"}
    # best first: e(5) + a(100) = 105; b would make 155 > 150, so stop there
    assert select(rows(), threshold=0.5, token_budget=150) == {"e", "a"}
    assert select(rows(), threshold=0.5, token_budget=155) == {"e", "a", "b"}
    assert select(rows(), threshold=0.99) == set()


def test_fill_estimates_by_hand():
    rs = [IndexRow("a", 0.9, 100, 400, "", ""), IndexRow("b", 0.8, NOT_COUNTED, 200, "", ""),
          IndexRow("c", 0.7, 60, 200, "", ""), IndexRow("d", 0.1, NOT_COUNTED, 1000, "", "")]
    info = fill_estimates(rs, 0.5)
    # counted candidates: 160 tokens in 600 characters, so b gets 200 * 160 / 600 = 53.3 -> 53; d is no candidate
    assert [r.tokens for r in rs] == [100, 53, 60, NOT_COUNTED]
    assert info == {"method": "sampled", "pages_counted": 2, "pages_estimated": 1, "score_bins": [0.7],
                    "tokens_per_char": [0.266667]}
    # two bins of one counted page each (0.7 and 0.9): b (0.8) takes the upper bin's 100 / 400, e (0.65) the lower's
    rs = [IndexRow("a", 0.9, 100, 400, "", ""), IndexRow("b", 0.8, NOT_COUNTED, 200, "", ""),
          IndexRow("c", 0.7, 60, 200, "", ""), IndexRow("e", 0.65, NOT_COUNTED, 100, "", "")]
    info = fill_estimates(rs, 0.5, pages_per_bin=1)
    assert [r.tokens for r in rs] == [100, 50, 60, 30]
    assert info["score_bins"] == [0.7, 0.9] and info["tokens_per_char"] == [0.3, 0.25]
    assert fill_estimates(rows(), 0.5) == {"method": "exact", "pages_counted": 4}
    lone = [IndexRow("x", 0.9, NOT_COUNTED, 5, "", "")]
    with pytest.raises(ValueError, match="raise the token sample rate"):
        fill_estimates(lone, 0.5)
    with pytest.raises(ValueError, match="fill_estimates"):
        select(lone, 0.5, token_budget=10)


def test_token_counting_sample_and_counts():
    c = TokenCounting("byte", None, sample_rate=0.25, min_score=0.5)
    ids = [f"page-{i}" for i in range(4000)]
    share = sum(c.wanted(i, 0.9) for i in ids) / len(ids)
    assert 0.22 < share < 0.28 and not any(c.wanted(i, 0.4) for i in ids)
    assert [c.wanted(i, 0.9) for i in ids] == [sample_unit(i) < 0.25 for i in ids]  # fixed by the id alone
    assert c.count(["héllo", ""]) == [6, 0]  # UTF-8 bytes: é is two


def test_index_round_trip(tmp_path):
    write_index(tmp_path / "00000.tsv", rows())
    back = list(read_index(tmp_path))
    assert [(r.id, r.score, r.tokens, r.chars, r.url) for r in back] == [
        (r.id, r.score, r.tokens, r.chars, r.url) for r in rows()]
    (tmp_path / "bad.tsv").write_text("x\ty\n")
    with pytest.raises(ValueError, match="not a score index"):
        list(read_index(tmp_path))


def test_overlap():
    assert overlap({"a", "b", "c", "d"}, {"a", "b", "c"}) == 0.75
    assert overlap(set(), set()) == 1.0


def test_domains_use_all_pages():
    assert domain_of("https://WWW.Math.org:8080/x") == "math.org"
    assert domain_of(None) == "" and domain_of("not a url") == ""
    pages = [(r.id, r.url) for r in rows()] + [("f", None)]
    stats = {s.domain: s for s in discover(pages, {"a", "e"}, min_fraction=0.3)}
    assert set(stats) == {"m.org", "other.com"}
    assert (stats["m.org"].pages, stats["m.org"].recalled) == (4, 1)
    assert stats["m.org"].recalled_fraction == 0.25 and not stats["m.org"].math_related  # 25% is not > 30%
    assert stats["other.com"].math_related
    at_quarter = {s.domain: s for s in discover(pages, {"a", "e"}, min_fraction=0.25)}
    assert at_quarter["m.org"].math_related is False  # strictly more than the fraction
    assert {s.domain for s in discover(pages, {"a", "e"}, 0.1) if s.math_related} == {"m.org", "other.com"}
    assert {s.domain for s in discover(pages, {"a", "e"}, 0.1, min_pages=2) if s.math_related} == {"m.org"}


def test_domain_table_round_trip(tmp_path):
    stats = discover([(r.id, r.url) for r in rows()], {"a"}, 0.1)
    write_domains(tmp_path / "d.tsv", stats)
    assert read_domains(tmp_path / "d.tsv") == stats


def test_url_paths_annotation_and_expansion(tmp_path):
    assert path_prefixes("https://m.org/q/1/title") == ["/q/", "/q/1/"]
    assert path_prefixes("https://m.org/") == []
    pages = [(r.id, r.url, r.title) for r in rows()]
    table = annotate(pages, {"a", "b"}, {"m.org"}, auto_accept_fraction=0.6)
    got = {(s.prefix, s.pages, s.recalled, s.accept) for s in table}
    assert got == {("/q/", 3, 2, True), ("/blog/", 1, 0, False), ("/q/1/", 1, 1, True), ("/q/2/", 1, 1, True),
                   ("/q/3/", 1, 0, False), ("/blog/x/", 1, 0, False)}
    write_tsv(tmp_path / "p.tsv", table)
    header = (tmp_path / "p.tsv").read_text().splitlines()[0].split("\t")
    assert header[-1] == "accept" and "sample_urls" in header
    accepted = read_accepted(tmp_path / "p.tsv")
    assert ("m.org", "/q/") in accepted and ("m.org", "/blog/") not in accepted
    # the not-recalled page under the accepted /q/ joins the next seed; /blog/x does not
    assert expansion_ids([(p[0], p[1]) for p in pages], accepted, {"a", "b"}) == {"d"}
    # a person's edit: accept /blog/ by hand
    text = (tmp_path / "p.tsv").read_text().replace("\t/blog/\t1\t1\t0\t0.0000\thttps://m.org/blog/x\t\t",
                                                     "\t/blog/\t1\t1\t0\t0.0000\thttps://m.org/blog/x\t\tyes")
    (tmp_path / "p.tsv").write_text(text)
    assert ("m.org", "/blog/") in read_accepted(tmp_path / "p.tsv")
    (tmp_path / "bad.tsv").write_text("domain\tprefix\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_accepted(tmp_path / "bad.tsv")
