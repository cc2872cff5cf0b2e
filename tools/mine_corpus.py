#!/usr/bin/env python
"""Math-corpus mining (DeepSeekMath section 2.1).

    # classifier from a labelled jsonl (`label`, `text`); other labels are ignored
    python tools/mine_corpus.py train-classifier --input labelled.jsonl --out math.bin
    python tools/mine_corpus.py evaluate --model math.bin --input heldout.jsonl   # last line: f1=0.973

    # iterative recall over WARC/WET/jsonl pages (datatrove local or slurm executor): extraction, URL / exact /
    # MinHash dedup, then the iterations; the first keeps the top 40B tokens of the named tokenizer
    python tools/mine_corpus.py run --input crawl/ --seed-positives openwebmath.jsonl --output runs/mining \
        --auto-accept-fraction 0.5 --tokenizer-type HuggingFaceTokenizer --tokenizer-model tok/ \
        [--decontaminate-benchmarks ../shared/data/benchmarks] [--executor slurm --slurm-partition cpu --tasks 512]

    # extraction and dedup only (the same run directory; `run` later reuses them)
    python tools/mine_corpus.py dedup --input crawl/ --output runs/mining --tasks 64

``math_adjacent`` pages (physics / stats / cstheory Stack Exchange in
../shared/data/web/docs.jsonl) are neither positives nor negatives by
default: they are LaTeX-heavy and the paper's corpus keeps such pages, so as
negatives they would teach the classifier to reject real math, while the
seed definition (math.SE / MathOverflow) does not vouch for them as
positives.  ``--positive-labels`` / ``--negative-labels`` change that.

The collection of every iteration is ``OUTPUT/iter_NN/recalled/*.jsonl[.gz]``
and the final one ``OUTPUT/final/``: jsonl with a ``text`` field, which
tools/preprocess_data.py reads directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_dsm.config import ConfigError, add_arguments, from_namespace, load_yaml  # noqa: E402
from megatron_dsm.mining.classifier import ClassifierConfig, MathClassifier, train  # noqa: E402
from megatron_dsm.mining.dedup import DedupConfig  # noqa: E402
from megatron_dsm.mining.iterate import MiningConfig, MiningRun, iter_jsonl_texts  # noqa: E402
from megatron_dsm.mining.pipeline import ExecutorConfig, StageError  # noqa: E402


def read_labelled(path: str, positive: set[str], negative: set[str]) -> tuple[list[str], list[bool]]:
    """(texts, is_math) from a jsonl with `label` and `text`; rows with other labels are skipped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"labelled input not found: {p}")
    texts, gold = [], []
    for i, row in enumerate(iter_jsonl_texts(p), 1):
        label, text = row.get("label"), row.get("text")
        if not isinstance(label, str) or not isinstance(text, str):
            raise ConfigError(f"{p}: record {i} needs string `label` and `text` fields")
        if label in positive or label in negative:
            texts.append(text)
            gold.append(label in positive)
    if not any(gold) or all(gold):
        raise ConfigError(f"{p}: needs both classes (positive labels {sorted(positive)}, "
                          f"negative {sorted(negative)}); found {sum(gold)} positive of {len(gold)}")
    return texts, gold


def _labels(ns) -> tuple[set[str], set[str]]:
    pos, neg = set(ns.positive_labels), set(ns.negative_labels)
    if pos & neg:
        raise ConfigError(f"labels both positive and negative: {sorted(pos & neg)}")
    return pos, neg


def cmd_train(ns, base: dict) -> int:
    cfg = from_namespace(ClassifierConfig, ns, base.get("classifier"))
    pos, neg = _labels(ns)
    texts, gold = read_labelled(ns.input, pos, neg)
    clf = train([t for t, g in zip(texts, gold) if g], [t for t, g in zip(texts, gold) if not g], cfg)
    if ns.out.endswith(".ftz"):
        clf.quantize()
    clf.save(ns.out)
    print(f"trained on {sum(gold)} positives / {len(gold) - sum(gold)} negatives "
          f"(balanced: {cfg.balance}); saved {ns.out}")
    return 0


def cmd_evaluate(ns, base: dict) -> int:
    pos, neg = _labels(ns)
    texts, gold = read_labelled(ns.input, pos, neg)
    clf = MathClassifier.load(ns.model, threshold=ns.threshold)
    for line in clf.evaluate(texts, gold).lines():
        print(line)
    return 0


def _mining_run(ns, base: dict) -> MiningRun:
    cfg = from_namespace(MiningConfig, ns, base.get("mining"))
    clf_cfg = from_namespace(ClassifierConfig, ns, base.get("classifier"))
    ex_cfg = from_namespace(ExecutorConfig, ns, base.get("executor"))
    return MiningRun(cfg, clf_cfg, ex_cfg, dedup_cfg=from_namespace(DedupConfig, ns, base.get("dedup")))


def cmd_run(ns, base: dict) -> int:
    _mining_run(ns, base).run()
    return 0


def cmd_dedup(ns, base: dict) -> int:
    _mining_run(ns, base).prepare()
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="YAML with sections classifier:, mining:, executor:, dedup: (CLI wins)")
    sub = ap.add_subparsers(dest="command", required=True)

    def label_args(p):
        p.add_argument("--positive-labels", nargs="+", default=["math"], help="labels counted as math")
        p.add_argument("--negative-labels", nargs="+", default=["non_math"], help="labels counted as not math")

    t = sub.add_parser("train-classifier", help="train the fastText classifier from a labelled jsonl")
    t.add_argument("--input", required=True, help="jsonl with `label` and `text`")
    t.add_argument("--out", required=True, help="model path (.ftz: quantized)")
    label_args(t)
    add_arguments(t, ClassifierConfig)

    e = sub.add_parser("evaluate", help="precision / recall / F1 on a labelled jsonl")
    e.add_argument("--model", required=True)
    e.add_argument("--input", required=True, help="jsonl with `label` and `text`")
    e.add_argument("--threshold", type=float, default=0.5, help="P(math) at or above which a page is math")
    label_args(e)

    r = sub.add_parser("run", help="extraction, dedup, then iterative recall, domain discovery and URL-path "
                                   "annotation")
    d = sub.add_parser("dedup", help="extraction and dedup only (report.json counts what each check removed)")
    for p in (r, d):
        add_arguments(p, MiningConfig)
        add_arguments(p, ExecutorConfig)
        add_arguments(p, DedupConfig)
    add_arguments(r, ClassifierConfig)
    return ap


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        base = {}
        if ns.config:
            base = {k: load_yaml(ns.config, k) for k in ("classifier", "mining", "executor", "dedup")}
        return {"train-classifier": cmd_train, "evaluate": cmd_evaluate, "run": cmd_run,
                "dedup": cmd_dedup}[ns.command](ns, base)
    except (ConfigError, FileNotFoundError, ValueError, StageError) as e:
        print(f"mine_corpus.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
