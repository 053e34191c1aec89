"""Benchmark 5: full-ranking evaluation, users/s, vs a per-user Python loop; identical metrics.

One synthetic downstream domain (DomainData built in memory: n_items items, users with 3-50
train items) and one scoring function shared by both contenders: an (untrained, seeded) SASRec
user model (cprec_core.rec.baselines.build_sasrec, finetune defaults) reads the last
max_seq_len history items; its user vector, snapped to a grid of 1/4, is dotted with integer
item vectors. Snapping makes every score an exact small integer, so a score never depends on
how many users share a matrix product (floating-point sums do) and ties are frequent: the
pessimistic tie rule is exercised and both contenders can be held to identical ranks.
`project` is
cprec_core.rec.ranking.rank_users (batched scoring, vectorised pessimistic ranks) +
cprec_core.metrics.mean_metrics. `loop` is what users write: for each user, score, mask the
history, rank the target, compute Recall/NDCG/MRR in Python. Ranks must match exactly and every
metric to 1e-12.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from bench.common import BenchError, measure

KS = [5, 10, 20, 50]


def _data(n_users: int, n_items: int, seed: int = 0):
    from cprec_core.rec.data import DomainData

    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 51, n_users)
    train = [rng.integers(0, n_items, n) for n in lengths]
    return DomainData(
        domain="Bench",
        item_ids=[f"I{i}" for i in range(n_items)],
        titles=[f"item {i}" for i in range(n_items)],
        categories=[None] * n_items,
        user_ids=[f"U{u}" for u in range(n_users)],
        train=train,
        valid_target=rng.integers(0, n_items, n_users),
        test_target=rng.integers(0, n_items, n_users),
    )


def _score_fn(n_items: int, seed: int = 0):
    import torch

    from cprec_core.config import FinetuneConfig
    from cprec_core.rec.baselines import build_sasrec
    from cprec_core.rec.data import left_pad

    cfg = FinetuneConfig()
    torch.manual_seed(seed)
    model = build_sasrec(n_items, cfg).eval()
    items = np.random.default_rng(seed + 1).integers(-3, 4, (n_items, cfg.hidden_size)).astype(np.float64)

    def score(hist: list[np.ndarray]) -> np.ndarray:
        seq = torch.from_numpy(left_pad(hist, cfg.max_seq_len, n_items))
        with torch.no_grad():
            users = model(seq)[:, -1].double().numpy()
        return np.round(users * 4) @ items.T  # exact: small integers in float64

    return score


def run_project(n_users: int, n_items: int) -> dict[str, Any]:
    """rank_users + mean_metrics on the test split."""
    from cprec_core.metrics import mean_metrics
    from cprec_core.rec.ranking import rank_users

    data, score = _data(n_users, n_items), _score_fn(n_items)
    t0 = time.perf_counter()
    ranks = rank_users(score, data, "test")
    metrics = mean_metrics(ranks, KS)
    return {"seconds": time.perf_counter() - t0, "ranks": ranks.tolist(), "metrics": metrics}


def run_loop(n_users: int, n_items: int) -> dict[str, Any]:
    """One user at a time: score, exclude history (never the target), pessimistic rank, metrics."""
    data, score = _data(n_users, n_items), _score_fn(n_items)
    t0 = time.perf_counter()
    ranks, sums = [], dict.fromkeys([*(f"Recall@{k}" for k in KS), *(f"NDCG@{k}" for k in KS), "MRR"], 0.0)
    for hist, target in zip(data.history("test"), data.test_target, strict=True):
        s = score([hist])[0]
        t_score = s[target]
        s[hist] = -np.inf
        s[target] = t_score
        rank = int((s >= t_score).sum()) - 1  # ties count against the target
        ranks.append(rank)
        for k in KS:
            sums[f"Recall@{k}"] += rank < k
            sums[f"NDCG@{k}"] += 1.0 / math.log2(rank + 2) if rank < k else 0.0
        sums["MRR"] += 1.0 / (rank + 1)
    metrics = {name: v / n_users for name, v in sums.items()}
    return {"seconds": time.perf_counter() - t0, "ranks": ranks, "metrics": metrics}


def run(work: Any, quick: bool) -> dict[str, Any]:
    """Both contenders on the same users and items; fails unless they agree."""
    n_users, n_items = (200, 2_000) if quick else (1_000, 10_000)
    args = {"n_users": n_users, "n_items": n_items}
    project, loop = measure("bench.ranking:run_project", args), measure("bench.ranking:run_loop", args)
    if project.pop("ranks") != loop.pop("ranks"):
        raise BenchError("ranking: the per-user loop's ranks differ from rank_users'")
    for name, v in project["metrics"].items():
        if abs(v - loop["metrics"][name]) > 1e-12:
            raise BenchError(f"ranking: {name} differs: {v} vs {loop['metrics'][name]}")
    for c in (project, loop):
        c["users_per_s"] = n_users / c["seconds"]
    return {
        "users": n_users,
        "items": n_items,
        "identical": True,
        "contenders": {"project": project, "loop": loop},
        "ratio": project["users_per_s"] / loop["users_per_s"],
    }
