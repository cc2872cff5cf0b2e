"""Iteration driver for math-corpus mining (paper 2.1, four iterations).

Layout of a run directory::

    pages/              extracted pages, one file per input file (once)
    dedup/              signatures, duplicate lists, MinHash clusters (``--dedup-method stages``)
    deduped/            the pages less URL, exact and near duplicates: what every iteration scores
    iter_01/
      model.bin         classifier of this iteration
      scored/ index/    every page with its score; id/score/tokens/chars/url/title index
      recalled_ids.txt  selection;  recalled/  the collected pages (jsonl.gz)
      domains.tsv       all domains with page/recalled counts, math_related flag
      url_paths.tsv     prefixes in math domains with an `accept` column
      url_paths.accepted.tsv   optional: a person's filled-in copy (wins when present)
      expansion_ids.txt pages under accepted prefixes not recalled -> next seed
      report.json       this iteration's numbers (written last: marks it complete)
    report.json         dedup counts, the budget's tokenizer, all iterations
    final/              the last iteration's collection, after optional decontamination

Deduplication comes first, as in the paper (URL and near duplicates removed
from the crawl before the recall), so the classifier scores, and the token
budget counts, each page once.

An iteration whose ``report.json`` exists is skipped on a rerun, and each
stage inside one is skipped when its output folder is complete, so an
interrupted run resumes where it stopped.

Iteration k trains on the seed positives plus every expansion page found by
iterations < k, against random pool pages (or ``--negatives``), holds out
``holdout_fraction`` of both for the F1 in the report, scores every page,
selects, finds math domains, writes the URL-path table and the expansion.
It stops when the collection overlaps the previous one by at least
``stop_overlap`` (share of this iteration's pages already collected before)
or after ``max_iterations``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.data.tokenizer import TokenizerError
from megatron_dsm.io import atomic_write, read_jsonl, replace_dir, write_json
from megatron_dsm.mining import classifier as clf_mod
from megatron_dsm.mining import domains as dom_mod
from megatron_dsm.mining import recall as rec_mod
from megatron_dsm.mining import url_paths as up_mod
from megatron_dsm.mining.dedup import DedupConfig, run_dedup
from megatron_dsm.mining.pipeline import (
    ExecutorConfig,
    ExtractText,
    KeepIds,
    ScorePages,
    jsonl_reader,
    jsonl_writer,
    run_stage,
)

WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz", ".wat", ".wat.gz", ".arc.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")


@options
class MiningConfig:
    input: list[str] = field(default_factory=list, help="files or folders of WARC/WET (.warc[.gz], .wet[.gz]) "
                                                          "and jsonl pages (url + text or html)")
    seed_positives: str = field("", help="jsonl of seed positives (text field), e.g. OpenWebMath")
    negatives: str = field("", help="jsonl of negatives; default: random pages from the input pool")
    output: str = field("runs/mining", help="run directory (resumable)")
    max_iterations: int = field(4, help="iterations at most (paper: 4)")
    stop_overlap: float = field(0.98, help="stop when this share of an iteration's pages was already collected")
    recall_threshold: float = field(0.5, help="keep pages with P(math) >= this")
    token_budget: int = field(40_000_000_000, help="iteration 1 keeps the top-scored pages up to this many tokens "
                                                   "of the --tokenizer-* tokenizer (paper: 40B; 0: no budget)")
    later_token_budget: int = field(0, help="the same for iterations 2 and later (0: every page above the "
                                            "threshold)")
    tokenizer_type: str = field("auto", help="tokenizer the budget counts in, named as for "
                                             "tools/preprocess_data.py: HuggingFaceTokenizer | "
                                             "SentencePieceTokenizer | hf | sentencepiece | byte | auto "
                                             "(a .model is SentencePiece; no model: UTF-8 bytes)")
    tokenizer_model: str = field("", help="tokenizer.json, a folder holding one, or a SentencePiece .model")
    token_sample_rate: float = field(1.0, help="share of the pages above the threshold whose tokens are counted; "
                                               "the others are estimated from their length (report.json says "
                                               "which)")
    domain_fraction: float = field(0.10, help="a domain is math-related when more than this share is recalled")
    domain_min_pages: int = field(1, help="a math-related domain needs at least this many pages")
    auto_accept_fraction: float = field(0.0, help="accept URL prefixes recalled at least this much (0: a person "
                                                   "fills the accept column of url_paths.tsv)")
    holdout_fraction: float = field(0.1, help="share of training examples held out for the F1 report")
    negatives_per_positive: float = field(1.0, help="random pool negatives drawn per positive")
    detect_language: bool = field(True, help="record py3langid language id for each page")
    dedup: bool = field(True, help="remove URL, exact and near duplicates from the pages before recall "
                                   "(megatron_dsm.mining.dedup; options --dedup-*, --minhash-*)")
    decontaminate_benchmarks: str = field("", help="benchmark folder: decontaminate the final collection")

    def __post_init__(self):
        if not self.input:
            raise ConfigError("mining: --input needs at least one file or folder")
        for p in self.input:
            if not Path(p).exists():
                raise ConfigError(f"mining: input {p} does not exist")
        if self.seed_positives and not Path(self.seed_positives).is_file():
            raise ConfigError(f"mining: --seed-positives must be a jsonl file, got {self.seed_positives!r}")
        if self.negatives and not Path(self.negatives).is_file():
            raise ConfigError(f"mining: --negatives {self.negatives} is not a file")
        if self.max_iterations < 1:
            raise ConfigError(f"mining: max_iterations must be >= 1, got {self.max_iterations}")
        for name in ("stop_overlap", "recall_threshold", "domain_fraction", "auto_accept_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"mining: {name} must be in [0, 1], got {v}")
        if self.token_budget < 0 or self.later_token_budget < 0:
            raise ConfigError("mining: token budgets must be >= 0")
        if not 0.0 < self.token_sample_rate <= 1.0:
            raise ConfigError(f"mining: token_sample_rate must be in (0, 1], got {self.token_sample_rate}")
        if not 0.0 < self.holdout_fraction < 0.5:
            raise ConfigError(f"mining: holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if self.decontaminate_benchmarks and not Path(self.decontaminate_benchmarks).is_dir():
            raise ConfigError(f"mining: --decontaminate-benchmarks {self.decontaminate_benchmarks} is not a folder")


# --------------------------------------------------------------------------
# inputs


def classify_inputs(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """(warc/wet files, jsonl files) under the given files/folders, sorted, absolute."""
    warc, jsonl = [], []
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            name = f.name.lower()
            if name.endswith(WARC_SUFFIXES):
                warc.append(str(f.resolve()))
            elif name.endswith(JSONL_SUFFIXES):
                jsonl.append(str(f.resolve()))
    return warc, jsonl


def _paths_file(path: Path, files: list[str]) -> str:
    atomic_write(path, "".join(f.lstrip("/") + "\n" for f in files))
    return str(path)


def iter_jsonl_texts(path: str | Path) -> Iterator[dict]:
    """Rows of a jsonl(.gz) file; a bad line stops with its file and line number."""
    for _, row in read_jsonl(path):
        yield row


def iter_shards(folder: Path) -> Iterator[dict]:
    for p in sorted(Path(folder).glob("*.jsonl*")):
        yield from iter_jsonl_texts(p)


def reservoir(items: Iterable, k: int, rng: random.Random) -> list:
    out: list = []
    for i, x in enumerate(items):
        if i < k:
            out.append(x)
        else:
            j = rng.randint(0, i)
            if j < k:
                out[j] = x
    return out


# --------------------------------------------------------------------------
# driver


@dataclasses.dataclass
class IterationReport:
    iteration: int
    pages_scored: int
    pages_collected: int
    tokens_collected: int
    math_domains: int
    new_domains: list[str]
    prefixes_annotated: int
    accepted_prefixes: int
    expansion_pages: int
    positives: int
    negatives: int
    overlap_with_previous: float | None
    classifier: dict
    token_budget: int
    token_count: dict
    seconds: float


class MiningRun:
    def __init__(self, cfg: MiningConfig, clf_cfg: clf_mod.ClassifierConfig | None = None,
                 ex_cfg: ExecutorConfig | None = None, log: Callable[[str], None] = print,
                 dedup_cfg: DedupConfig | None = None):
        self.cfg = cfg
        self.clf_cfg = clf_cfg or clf_mod.ClassifierConfig()
        self.ex_cfg = ex_cfg or ExecutorConfig()
        self.dedup_cfg = dedup_cfg or DedupConfig()
        self.root = Path(cfg.output)
        self.logs = self.root / "logs"
        self.log = log
        self.counting = rec_mod.TokenCounting(cfg.tokenizer_type, cfg.tokenizer_model or None,
                                              cfg.token_sample_rate, cfg.recall_threshold)

    @property
    def pool(self) -> Path:
        """The pages every iteration scores: deduplicated unless dedup is off."""
        return self.root / ("deduped" if self.cfg.dedup else "pages")

    def tokenizer_info(self) -> dict:
        """The budget's tokenizer; building it here makes a bad name or file one error before any stage runs."""
        try:
            tok = self.counting.tokenizer()
        except TokenizerError as e:
            raise ConfigError(f"mining: {e}") from None
        return {**tok.describe(), "sample_rate": self.cfg.token_sample_rate}

    # -- stages ------------------------------------------------------------
    def extract(self) -> Path:
        warc, jsonl = classify_inputs(self.cfg.input)
        if not warc and not jsonl:
            raise ConfigError(f"mining: no .warc/.wet/.jsonl files under {self.cfg.input}")
        self.root.mkdir(parents=True, exist_ok=True)
        from megatron_dsm.mining.readers import JsonlPageReader, WarcPageReader

        def build(out):
            steps = []
            if warc:
                steps.append(WarcPageReader("/", paths_file=_paths_file(self.root / "inputs_warc.txt", warc),
                                            shard_offset=0))
            if jsonl:
                steps.append(JsonlPageReader("/", paths_file=_paths_file(self.root / "inputs_jsonl.txt", jsonl),
                                             shard_offset=len(warc)))
            return steps + [ExtractText(self.cfg.detect_language),
                            jsonl_writer(out, self.ex_cfg.compression, name="${page_shard}")]

        self.log(f"extract: {len(warc)} WARC/WET and {len(jsonl)} jsonl files")
        return run_stage("extract", self.root / "pages", build, self.logs, self.ex_cfg)

    def dedup(self) -> dict | None:
        """URL, exact and near duplicates out of ``pages/`` into ``deduped/`` (None when dedup is off)."""
        if not self.cfg.dedup:
            return None
        self.log(f"dedup ({self.dedup_cfg.method}): {', '.join(self.dedup_cfg.checks)}")
        counts = run_dedup(self.dedup_cfg, self.ex_cfg, self.root / "pages", self.root / "deduped",
                           self.root / "dedup", self.logs)
        self.log("dedup: {pages_in} pages, removed {r[url]} URL, {r[exact]} exact and {r[near]} near duplicates, "
                 "{pages_out} kept".format(r=counts["removed"], **counts))
        return counts

    def prepare(self) -> dict:
        """Extraction and dedup, with their part of report.json."""
        report = {"tokenizer": self.tokenizer_info()}
        self.extract()
        report["dedup"] = self.dedup()
        write_json(self.root / "report.json", {**self._report(), **report})
        return report

    def _report(self) -> dict:
        path = self.root / "report.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _training_data(self, it: int, expansion: set[str]) -> tuple[list[str], list[str]]:
        rng = random.Random(self.clf_cfg.seed + it)
        cap = self.clf_cfg.max_per_class
        seed_rows = reservoir((r for r in iter_jsonl_texts(self.cfg.seed_positives) if isinstance(r.get("text"), str)
                               and r["text"].strip()), cap, rng)
        positives = [r["text"] for r in seed_rows]
        seed_ids = {str(r.get("id")) for r in seed_rows if r.get("id") is not None}
        if expansion:
            positives += [r["text"] for r in iter_shards(self.pool) if r["id"] in expansion]
        if self.cfg.negatives:
            negatives = [r["text"] for r in reservoir(
                (r for r in iter_jsonl_texts(self.cfg.negatives) if isinstance(r.get("text"), str)), cap, rng)]
        else:
            # the paper's negatives: random pages of the pool (math is rare there); skip seed/expansion ids
            k = min(cap, max(1, int(len(positives) * self.cfg.negatives_per_positive)))
            negatives = [r["text"] for r in reservoir(
                (r for r in iter_shards(self.pool) if r["id"] not in seed_ids and r["id"] not in expansion),
                k, rng)]
        return positives, negatives

    def train(self, it: int, d: Path, expansion: set[str]) -> tuple[Path, dict, int, int]:
        model_path = d / "model.bin"
        metrics_path = d / "classifier.json"
        if model_path.is_file() and metrics_path.is_file():
            m = json.loads(metrics_path.read_text())
            return model_path, m["metrics"], m["positives"], m["negatives"]
        positives, negatives = self._training_data(it, expansion)
        tr_p, ho_p = clf_mod.split_holdout(positives, self.cfg.holdout_fraction, self.clf_cfg.seed)
        tr_n, ho_n = clf_mod.split_holdout(negatives, self.cfg.holdout_fraction, self.clf_cfg.seed + 1)
        self.log(f"iteration {it}: training on {len(tr_p)} positives / {len(tr_n)} negatives")
        clf = clf_mod.train(tr_p, tr_n, self.clf_cfg)
        metrics = dataclasses.asdict(clf.evaluate(ho_p + ho_n, [True] * len(ho_p) + [False] * len(ho_n)))
        clf.save(model_path)
        write_json(metrics_path, {"metrics": metrics, "positives": len(positives), "negatives": len(negatives)})
        return model_path, metrics, len(positives), len(negatives)

    def iteration(self, it: int, expansion: set[str], previous_ids: set[str] | None,
                  known_domains: set[str]) -> IterationReport:
        t0 = time.time()
        d = self.root / f"iter_{it:02d}"
        d.mkdir(parents=True, exist_ok=True)
        model_path, metrics, n_pos, n_neg = self.train(it, d, expansion)

        pages = self.pool
        run_stage(f"iter_{it:02d}_score", d / "scored", lambda out: [
            jsonl_reader(pages), ScorePages(str(model_path), index_folder=str(d / "index.partial"),
                                            counting=self.counting),
            jsonl_writer(out, self.ex_cfg.compression)], self.logs, self.ex_cfg)
        if not (d / "index").is_dir():
            replace_dir(d / "index.partial", d / "index")
        index = list(rec_mod.read_index(d / "index"))
        token_count = rec_mod.fill_estimates(index, self.cfg.recall_threshold)
        budget = self.cfg.token_budget if it == 1 else self.cfg.later_token_budget
        recalled = rec_mod.select(index, self.cfg.recall_threshold, budget)
        rec_mod.write_ids(d / "recalled_ids.txt", recalled)
        run_stage(f"iter_{it:02d}_keep", d / "recalled", lambda out: [
            jsonl_reader(d / "scored"), KeepIds(str(d / "recalled_ids.txt")),
            jsonl_writer(out, self.ex_cfg.compression)],
            self.logs, self.ex_cfg)

        stats = dom_mod.discover(((r.id, r.url) for r in index), recalled, self.cfg.domain_fraction,
                                    self.cfg.domain_min_pages)
        dom_mod.write_domains(d / "domains.tsv", stats)
        math_domains = {s.domain for s in stats if s.math_related}
        rows = up_mod.annotate(((r.id, r.url, r.title) for r in index), recalled, math_domains,
                               self.cfg.auto_accept_fraction)
        up_mod.write_tsv(d / "url_paths.tsv", rows)
        accepted_file = d / "url_paths.accepted.tsv"
        accepted = up_mod.read_accepted(accepted_file if accepted_file.is_file() else d / "url_paths.tsv")
        new_expansion = up_mod.expansion_ids(((r.id, r.url) for r in index), accepted, recalled)
        rec_mod.write_ids(d / "expansion_ids.txt", new_expansion)

        return IterationReport(
            iteration=it, pages_scored=len(index), pages_collected=len(recalled),
            tokens_collected=sum(r.tokens for r in index if r.id in recalled), math_domains=len(math_domains),
            new_domains=sorted(math_domains - known_domains), prefixes_annotated=len(rows),
            accepted_prefixes=len(accepted), expansion_pages=len(new_expansion), positives=n_pos, negatives=n_neg,
            overlap_with_previous=None if previous_ids is None else round(rec_mod.overlap(recalled, previous_ids), 4),
            classifier={k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
            token_budget=budget, token_count=token_count, seconds=round(time.time() - t0, 1))

    # -- driver ------------------------------------------------------------
    def run(self) -> list[dict]:
        if not self.cfg.seed_positives:
            raise ConfigError("mining: --seed-positives (a jsonl of math pages) is needed to train the classifier")
        head = self.prepare()
        reports: list[dict] = []
        expansion: set[str] = set()
        previous: set[str] | None = None
        known: set[str] = set()
        for it in range(1, self.cfg.max_iterations + 1):
            d = self.root / f"iter_{it:02d}"
            done = d / "report.json"
            if done.is_file():
                rep = json.loads(done.read_text())
                self.log(f"iteration {it}: complete on disk, skipped")
            else:
                rep = dataclasses.asdict(self.iteration(it, expansion, previous, known))
                write_json(done, rep)
            reports.append(rep)
            write_json(self.root / "report.json", {**head, "iterations": reports})
            self.log(format_table(reports))
            known |= {s.domain for s in dom_mod.read_domains(d / "domains.tsv") if s.math_related}
            expansion |= rec_mod.read_ids(d / "expansion_ids.txt")
            previous = rec_mod.read_ids(d / "recalled_ids.txt")
            ov = rep["overlap_with_previous"]
            if ov is not None and ov >= self.cfg.stop_overlap:
                self.log(f"iteration {it}: overlap {ov:.3f} >= {self.cfg.stop_overlap}: stopping")
                break
        self.finalize(Path(self.root / f"iter_{reports[-1]['iteration']:02d}" / "recalled"))
        return reports

    def finalize(self, collection: Path) -> Path:
        """``final/``: the last collection, through the optional decontamination stage."""
        steps = final_steps(self.cfg, self.root)
        if not steps:
            final = self.root / "final"
            if not final.exists():
                os.symlink(collection.resolve(), final, target_is_directory=True)
            return final
        comp = self.ex_cfg.compression
        return run_stage("final", self.root / "final",
                         lambda out: [jsonl_reader(collection), *steps, jsonl_writer(out, comp)],
                         self.logs, self.ex_cfg)


def final_steps(cfg: MiningConfig, root: Path) -> list:
    """Optional benchmark decontamination of the final collection (a per-page step: any task count)."""
    steps: list = []
    if cfg.decontaminate_benchmarks:
        from megatron_dsm.mining.decontaminate import (
            BenchmarkDecontamination,
            DecontConfig,
        )

        steps.append(BenchmarkDecontamination(cfg.decontaminate_benchmarks, DecontConfig(),
                                              report_folder=str(root / "decontamination")))
    return steps


def format_table(reports: list[dict]) -> str:
    head = ("iter", "pages", "tokens", "math_dom", "new_dom", "accepted", "expand", "overlap", "clf_f1")
    lines = [" ".join(f"{h:>9}" for h in head)]
    for r in reports:
        ov = "-" if r["overlap_with_previous"] is None else f"{r['overlap_with_previous']:.3f}"
        vals = (r["iteration"], r["pages_collected"], r["tokens_collected"], r["math_domains"],
                len(r["new_domains"]), r["accepted_prefixes"], r["expansion_pages"], ov,
                f"{r['classifier']['f1']:.3f}")
        lines.append(" ".join(f"{v:>9}" for v in vals))
    return "\n".join(lines)
