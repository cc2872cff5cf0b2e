"""Metrics over graded samples: greedy accuracy, unbiased pass@k, maj@k.

pass@k uses the unbiased estimator from n >= k samples of which c are
correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), computed as a product
so it stays exact for large n.  maj@k takes the first k samples, votes over
*normalised* answers grouped by equivalence, and breaks ties
deterministically: the answer that appeared first among the k samples wins
(so the result never depends on dict or hash order).

Results are a JSON-able dict per benchmark with MATH broken down by subject
and level, a printed table, and a PNG of maj@k / pass@k against k in the
manner of the paper's Figure 7.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from typing import Callable, Iterable, Optional, Sequence

from megatron_dsm import io


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct."""
    if not (0 <= c <= n) or k < 1:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    return float(1 - exact_fail_prob(n, c, k))


def exact_fail_prob(n: int, c: int, k: int) -> Fraction:
    """C(n-c, k) / C(n, k) as an exact fraction."""
    return Fraction(math.comb(n - c, k), math.comb(n, k))


def majority_vote(answers: Sequence[Optional[str]],
                  same: Callable[[str, str], bool] | None = None) -> Optional[str]:
    """Most frequent answer (None = no answer, never wins over an answer).

    Answers are grouped by ``same`` (default: string equality of the already
    normalised answers); the group's representative is its first member.  Ties
    go to the group whose first member came earliest.
    """
    groups: list[list] = []          # [representative, count, first_index]
    for i, a in enumerate(answers):
        if a is None or a == "":
            continue
        for g in groups:
            if g[0] == a or (same is not None and same(g[0], a)):
                g[1] += 1
                break
        else:
            groups.append([a, 1, i])
    if not groups:
        return None
    best = max(groups, key=lambda g: (g[1], -g[2]))
    return best[0]


def maj_at_k(answers: Sequence[Optional[str]], correct: Sequence[bool], k: int,
             same: Callable[[str, str], bool] | None = None) -> bool:
    """Is the majority answer among the first k samples correct?

    ``correct[i]`` says whether ``answers[i]`` was graded correct; the voted
    answer is correct iff its first occurrence (its representative) was.
    """
    if k > len(answers):
        raise ValueError(f"maj_at_k: k={k} exceeds the number of samples {len(answers)}")
    sub = list(answers[:k])
    winner = majority_vote(sub, same)
    if winner is None:
        return False
    for a, ok in zip(sub, correct[:k]):
        if a == winner:
            return bool(ok)
    return False


def default_ks(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def summarize(records: Iterable[dict], ks: Sequence[int] | None = None,
              same: Callable[[str, str], bool] | None = None) -> dict:
    """Aggregate graded records into metrics.

    Each record: ``benchmark``, ``correct`` (list of bool, one per sample;
    sample 0 is the greedy one when greedy decoding was used), ``answers``
    (normalised extracted answers, same length), optional ``subject`` and
    ``level`` (MATH).
    """
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_bench[r["benchmark"]].append(r)
    out = {}
    for bench, recs in sorted(by_bench.items()):
        out[bench] = _summarize_group(recs, ks, same)
        if any(r.get("subject") for r in recs):
            for key in ("subject", "level"):
                groups: dict[str, list[dict]] = defaultdict(list)
                for r in recs:
                    if r.get(key) is not None:
                        groups[str(r[key])].append(r)
                out[bench]["by_" + key] = {g: _summarize_group(v, ks, same)
                                           for g, v in sorted(groups.items())}
    return out


def _summarize_group(recs: list[dict], ks, same) -> dict:
    n_min = min(len(r["correct"]) for r in recs)
    if n_min == 0:
        raise ValueError("summarize: a record has no samples")
    kk = [k for k in (ks or default_ks(n_min)) if k <= n_min]
    res = {"count": len(recs), "samples": n_min,
           "accuracy": sum(bool(r["correct"][0]) for r in recs) / len(recs)}
    if n_min > 1:
        res["pass@k"] = {str(k): sum(pass_at_k(len(r["correct"]), sum(map(bool, r["correct"])), k)
                                     for r in recs) / len(recs) for k in kk}
        res["maj@k"] = {str(k): sum(maj_at_k(r["answers"], r["correct"], k, same)
                                    for r in recs) / len(recs) for k in kk}
    return res


def format_table(summary: dict) -> str:
    """Plain-text table: one row per benchmark (and MATH subject/level)."""
    rows = [("benchmark", "n", "acc", "pass@k (max k)", "maj@k (max k)")]

    def row(name, m):
        pk = m.get("pass@k", {})
        mk = m.get("maj@k", {})
        kmax = max(pk, key=int) if pk else None
        rows.append((name, str(m["count"]), f"{100 * m['accuracy']:.1f}",
                     f"{100 * pk[kmax]:.1f} (k={kmax})" if kmax else "-",
                     f"{100 * mk[kmax]:.1f} (k={kmax})" if kmax else "-"))

    for bench, m in summary.items():
        row(bench, m)
        for key in ("by_subject", "by_level"):
            for g, sub in m.get(key, {}).items():
                row(f"  {key[3:]}={g}", sub)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def write_json(summary: dict, path: str) -> None:
    io.write_json(path, summary, indent=2, sort_keys=True)


def plot_k_curves(summary: dict, path: str, title: str = "") -> None:
    """maj@k and pass@k against k (log2 axis), one panel per benchmark."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = [b for b, m in summary.items() if "pass@k" in m]
    if not benches:
        raise ValueError("plot_k_curves: no benchmark has more than one sample per problem")
    fig, axes = plt.subplots(1, len(benches), figsize=(4.5 * len(benches), 3.6), squeeze=False)
    for ax, b in zip(axes[0], benches):
        m = summary[b]
        ks = sorted(int(k) for k in m["pass@k"])
        ax.plot(ks, [100 * m["maj@k"][str(k)] for k in ks], "o-", label="Maj@K")
        ax.plot(ks, [100 * m["pass@k"][str(k)] for k in ks], "s--", label="Pass@K")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("K: number of candidates")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(b)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
