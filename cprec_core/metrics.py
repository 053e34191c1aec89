"""Full-ranking top-K metrics and paired significance tests (PAPER.md §6).

Reads a score matrix (users x all items of a domain) or per-user ranks; writes nothing. The
maths is pure numpy, batched as matrix operations, in the spirit of RecBole's
recbole/evaluator/metrics.py: every metric is a function of the target's rank alone.

Rank (0-based) of user u's target item t, over all items of the domain:

    rank_u = #{ j != t : j not in history_u, s_uj >= s_ut }

History items (train, plus valid at test time) are excluded from the ranking; the target itself
is never excluded, even if it also occurs in the history (a re-purchase). Ties count AGAINST the
target (pessimistic rule): a model that gives every item the same score ranks every target last,
so constant or collapsed scores can never look good (Sun et al., RecSys 2020, "Are we evaluating
rigorously?", showed how optimistic tie-breaking inflates such models).

For leave-one-out (one target per user) with rank r:

    Recall@K = HitRate@K = 1[r < K]
    NDCG@K   = 1[r < K] / log2(r + 2)           (IDCG = 1: one relevant item)
    MRR      = 1 / (r + 1)                      (over the full ranking, no cut-off)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def full_ranks(scores: np.ndarray, targets: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
    """Pessimistic 0-based rank of each user's target among all non-history items.

    scores: float [n_users, n_items]; targets: int [n_users]; history: bool [n_users, n_items]
    (True = seen item, excluded from the ranking; the target column is never excluded).
    Returns int64 [n_users].
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores {scores.shape} and targets {targets.shape}: expected [U, I] and [U]")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: the model diverged")
    if targets.size and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"target index out of range [0, {scores.shape[1]})")
    rows = np.arange(scores.shape[0])
    target_scores = scores[rows, targets][:, None]
    beats = scores >= target_scores  # includes ties
    beats[rows, targets] = False  # the target does not beat itself
    if history is not None:
        history = np.asarray(history, dtype=bool)
        if history.shape != scores.shape:
            raise ValueError(f"history mask {history.shape} != scores {scores.shape}")
        beats &= ~history  # a masked item is out of the ranking (never the target: cleared above)
    return beats.sum(axis=1).astype(np.int64)


def metric_names(ks: list[int]) -> list[str]:
    """Column names in a fixed order: Recall@K..., NDCG@K..., MRR."""
    return [f"Recall@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + ["MRR"]


def per_user_metrics(ranks: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """Per-user Recall@K, NDCG@K and MRR from 0-based ranks (formulas in the module docstring)."""
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"Recall@{k}"] = (r < k).astype(np.float64)
    for k in ks:
        out[f"NDCG@{k}"] = np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)
    out["MRR"] = 1.0 / (r + 1.0)
    return out


def mean_metrics(ranks: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Metrics averaged over users."""
    return {name: float(v.mean()) if v.size else 0.0 for name, v in per_user_metrics(ranks, ks).items()}


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired test of variant A against variant B over the same users."""

    test: str
    n_users: int
    mean_a: float
    mean_b: float
    statistic: float
    p_value: float


def paired_test(a: np.ndarray, b: np.ndarray, test: str = "wilcoxon") -> PairedTest:
    """Two-sided paired test of per-user values a vs b (same users, same order).

    `wilcoxon`: Wilcoxon signed-rank (zero differences dropped, as in Wilcoxon's original test);
    `ttest`: paired Student t-test. When every difference is zero the variants are identical on
    these users and p = 1.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired test needs two equal-length vectors, got {a.shape} and {b.shape}")
    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"evaluate.test={test!r}: expected 'wilcoxon' or 'ttest'")
    n = int(a.size)
    if n == 0 or np.allclose(a, b, rtol=0.0, atol=1e-12):
        return PairedTest(test, n, float(a.mean()) if n else 0.0, float(b.mean()) if n else 0.0, 0.0, 1.0)
    if test == "wilcoxon":
        res = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    else:
        res = stats.ttest_rel(a, b, alternative="two-sided")
    return PairedTest(test, n, float(a.mean()), float(b.mean()), float(res.statistic), float(res.pvalue))
