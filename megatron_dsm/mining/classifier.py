"""fastText math-page classifier (paper section 2.1).

Seed positives (OpenWebMath in the paper) against random web pages, with the
paper's settings as defaults: vector dimension 256, learning rate 0.1,
word n-grams up to 3, minimum word count 3, 3 epochs, at most 500K examples
per class.  :func:`normalise` is the one text normalisation used for both
training lines and prediction, so the two can never drift apart.

fastText note: with ``thread`` < 11 fastText-numpy2 has been seen to stop
with "Encountered NaN" on small inputs (part of its initial weights is left
uninitialised), so the config refuses fewer than 11 threads; on a 2-core
machine the extra threads simply time-share.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.io import atomic_path

POSITIVE = "__label__math"
NEGATIVE = "__label__other"
MAX_CHARS = 100_000  # prediction cost is linear in length; the first 100K characters decide well enough


@options
class ClassifierConfig:
    dim: int = field(256, help="fastText vector dimension (paper: 256)")
    lr: float = field(0.1, help="fastText learning rate (paper: 0.1)")
    word_ngrams: int = field(3, help="fastText word n-gram order (paper: 3)")
    min_count: int = field(3, help="fastText minimum word count (paper: 3)")
    epoch: int = field(3, help="fastText epochs (paper: 3)")
    max_per_class: int = field(500_000, help="at most this many positives and negatives (paper: 500K each)")
    thread: int = field(12, help="fastText threads (>= 11: fewer can produce NaN weights)")
    bucket: int = field(2_000_000, help="fastText hash buckets for word n-grams (fastText's default; the model "
                                        "file is about (vocab + bucket) * dim * 4 bytes, ~2 GB at the defaults)")
    balance: bool = field(True, help="train on equally many positives and negatives (the paper's 500K/500K); "
                                     "unbalanced seeds on small data make fastText call everything the majority")
    seed: int = field(1234, help="seed for sampling and shuffling training lines")
    threshold: float = field(0.5, help="P(math) at or above which a page counts as math when evaluating")

    def __post_init__(self):
        for name in ("dim", "word_ngrams", "min_count", "epoch", "max_per_class", "bucket"):
            if getattr(self, name) < 1:
                raise ConfigError(f"classifier: {name} must be >= 1, got {getattr(self, name)}")
        if self.thread < 11:
            raise ConfigError(f"classifier: thread must be >= 11 (fastText can hit NaN with fewer), got {self.thread}")
        if not 0 < self.lr <= 10:
            raise ConfigError(f"classifier: lr must be in (0, 10], got {self.lr}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"classifier: threshold must be in [0, 1], got {self.threshold}")


def _build_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for c in "\n\r\t\v\f\u00a0\u2028\u2029":
        table[ord(c)] = " "
    for c in "!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~":
        table[ord(c)] = f" {c} "
    table[ord("\\")] = " \\"  # keep LaTeX commands whole: "\frac{" -> " \frac { "
    for d in "0123456789":
        table[ord(d)] = f" {d} "  # digits one by one: numbers stop flooding the vocabulary
    return table


_TABLE = _build_table()


def normalise(text: str) -> str:
    """Lower-case, one line, punctuation/LaTeX symbols and digits as separate tokens."""
    return text[:MAX_CHARS].lower().translate(_TABLE)


@dataclasses.dataclass
class Metrics:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_predictions(cls, gold: Sequence[bool], pred: Sequence[bool]) -> "Metrics":
        if len(gold) != len(pred):
            raise ValueError(f"metrics: {len(gold)} labels but {len(pred)} predictions")
        tp = sum(1 for g, p in zip(gold, pred) if g and p)
        fp = sum(1 for g, p in zip(gold, pred) if not g and p)
        fn = sum(1 for g, p in zip(gold, pred) if g and not p)
        tn = len(gold) - tp - fp - fn
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return cls(prec, rec, f1, tp, fp, fn, tn)

    def lines(self) -> list[str]:
        """Report lines; F1 last as ``f1=0.973`` (tools and tests read that line)."""
        n = self.tp + self.fp + self.fn + self.tn
        return [f"examples={n} tp={self.tp} fp={self.fp} fn={self.fn} tn={self.tn}",
                f"precision={self.precision:.3f}", f"recall={self.recall:.3f}", f"f1={self.f1:.3f}"]


class MathClassifier:
    """A trained fastText model; ``score`` is P(math) for a raw page text."""

    def __init__(self, model, threshold: float = 0.5):
        self.model = model
        self.threshold = threshold

    # -- scoring -----------------------------------------------------------
    def score(self, text: str) -> float:
        labels, probs = self.model.predict(normalise(text), k=1)
        return _p_math(labels[0], float(probs[0])) if labels else 0.0

    def score_batch(self, texts: Sequence[str]) -> list[float]:
        """One fastText call for many texts (its C++ loop; much cheaper than per-text calls)."""
        if not texts:
            return []
        labels, probs = self.model.predict([normalise(t) for t in texts], k=1)
        return [_p_math(lab[0], float(p[0])) if len(lab) else 0.0 for lab, p in zip(labels, probs)]

    def evaluate(self, texts: Sequence[str], gold: Sequence[bool], threshold: float | None = None) -> Metrics:
        thr = self.threshold if threshold is None else threshold
        scores = self.score_batch(texts)
        return Metrics.from_predictions(list(gold), [s >= thr for s in scores])

    # -- persistence -------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp:
            self.model.save_model(str(tmp))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, threshold: float = 0.5) -> "MathClassifier":
        import fasttext

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"classifier model not found: {p}")
        model = fasttext.load_model(str(p))
        if POSITIVE not in model.get_labels():
            raise ValueError(f"{p}: not a math classifier (labels {model.get_labels()}, need {POSITIVE})")
        return cls(model, threshold)

    def quantize(self, cutoff: int = 0) -> "MathClassifier":
        """Product-quantise in place (``.ftz``-sized model; slightly lower accuracy)."""
        self.model.quantize(cutoff=cutoff, retrain=False, qnorm=False)
        return self


def _p_math(label: str, prob: float) -> float:
    p = prob if label == POSITIVE else 1.0 - prob
    return min(1.0, max(0.0, p))


def training_lines(positives: Iterable[str], negatives: Iterable[str], cfg: ClassifierConfig) -> list[str]:
    """Sample at most ``max_per_class`` of each, label, normalise and shuffle (seeded)."""
    rng = random.Random(cfg.seed)
    pos = [t for t in positives if t and t.strip()]
    neg = [t for t in negatives if t and t.strip()]
    if not pos or not neg:
        raise ValueError(f"classifier training needs both classes: {len(pos)} positives, {len(neg)} negatives")
    n_pos, n_neg = min(len(pos), cfg.max_per_class), min(len(neg), cfg.max_per_class)
    if cfg.balance:
        n_pos = n_neg = min(n_pos, n_neg)
    if len(pos) > n_pos:
        pos = rng.sample(pos, n_pos)
    if len(neg) > n_neg:
        neg = rng.sample(neg, n_neg)
    lines = [f"{POSITIVE} {normalise(t)}" for t in pos] + [f"{NEGATIVE} {normalise(t)}" for t in neg]
    rng.shuffle(lines)
    return lines


def train(positives: Iterable[str], negatives: Iterable[str], cfg: ClassifierConfig | None = None,
          verbose: int = 0) -> MathClassifier:
    """Train positives vs negatives with fastText's supervised mode."""
    import fasttext

    cfg = cfg or ClassifierConfig()
    lines = training_lines(positives, negatives, cfg)
    with tempfile.TemporaryDirectory(prefix="dsm_ft_") as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        model = fasttext.train_supervised(
            input=str(path), dim=cfg.dim, lr=cfg.lr, wordNgrams=cfg.word_ngrams, minCount=cfg.min_count,
            epoch=cfg.epoch, thread=cfg.thread, bucket=cfg.bucket, seed=cfg.seed, verbose=verbose)
    return MathClassifier(model, cfg.threshold)


def split_holdout(items: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic (train, held-out) split; at least one item held out when there are two or more."""
    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    n_hold = int(round(len(items) * fraction))
    if len(items) >= 2:
        n_hold = min(max(n_hold, 1), len(items) - 1)
    hold = set(idx[:n_hold])
    return [items[i] for i in range(len(items)) if i not in hold], [items[i] for i in sorted(hold)]
