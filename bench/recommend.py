"""Benchmark 7: top-K recommendations, users/s, vs a per-user Python loop; identical lists.

The same synthetic domain and exact integer scores as benchmark 5 (bench/ranking.py). `project`
is cprec_core.recommend.top_k (batched scoring, history masked as a matrix, argsort per batch);
`loop` is what users write: for each user, score, mask the history, sort, take K. The two must
give the same items in the same order for every user (ties go to the lower item index).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import BenchError, measure
from bench.ranking import _data, _score_fn

K = 10


def run_project(n_users: int, n_items: int) -> dict[str, Any]:
    from cprec_core.recommend import full_histories, top_k

    data, score = _data(n_users, n_items), _score_fn(n_items)
    t0 = time.perf_counter()
    items, _ = top_k(score, full_histories(data), n_items, K)
    return {"seconds": time.perf_counter() - t0, "items": items.tolist()}


def run_loop(n_users: int, n_items: int) -> dict[str, Any]:
    from cprec_core.recommend import full_histories

    data, score = _data(n_users, n_items), _score_fn(n_items)
    t0 = time.perf_counter()
    out = []
    for hist in full_histories(data):
        s = score([hist])[0]
        s[hist] = -np.inf
        out.append(np.argsort(-s, kind="stable")[:K].tolist())
    return {"seconds": time.perf_counter() - t0, "items": out}


def run(work: Any, quick: bool) -> dict[str, Any]:
    """Both contenders on the same users; fails unless every user's list is the same."""
    n_users, n_items = (200, 2_000) if quick else (1_000, 10_000)
    args = {"n_users": n_users, "n_items": n_items}
    project, loop = measure("bench.recommend:run_project", args), measure("bench.recommend:run_loop", args)
    if project.pop("items") != loop.pop("items"):
        raise BenchError("recommend: the per-user loop's top-K lists differ from top_k's")
    for c in (project, loop):
        c["users_per_s"] = n_users / c["seconds"]
    return {
        "users": n_users,
        "items": n_items,
        "k": K,
        "identical": True,
        "contenders": {"project": project, "loop": loop},
        "ratio": project["users_per_s"] / loop["users_per_s"],
    }
