"""Synthetic bronze at benchmark scale, written straight to Parquet (no JSON, no ingest).

Writes BRONZE_INTERACTIONS and BRONZE_ITEMS under a run root through DatasetWriter (atomic, with
manifests), in chunks of CHUNK_ROWS events, so 50 M events need no more memory than 1 M. The data
exercises every rule of the behaviors stage: ~2% exact duplicate events, same-day timestamps
(ties broken by the raw order, source_line), ~3% of event items without any item record, ~5% of
items with a second record (the last one wins) and titles that are null, blank or too short after
trimming, Zipf-like user activity and item popularity (so the k-core takes several passes), and
7 domains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cprec_core.artifacts import DatasetWriter
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS

DOMAINS = ("Books", "Electronics", "Home", "Sports", "Toys", "Beauty", "Grocery")
CHUNK_ROWS = 1_000_000
ADJECTIVES = (
    "Vintage",
    "Neon",
    "Ocean",
    "Forest",
    "Minimal",
    "Retro",
    "Arctic",
    "Desert",
    "Cosmic",
    "Garden",
)
NOUNS = ("Reading Lamp", "Novel", "Headphones", "Yoga Mat", "Board Game", "Face Cream", "Tea Sampler", "Tent")
T0 = 1_500_000_000
DAY = 86_400


def shape(n_rows: int) -> tuple[int, int]:
    """(users, items per domain) for n_rows events: ~25 events per user, ~30 per item."""
    return max(100, n_rows // 25), max(50, n_rows // len(DOMAINS) // 30)


def _prefixed(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")


def _events(rng: np.random.Generator, n: int, n_users: int, n_items: int, first_line: int) -> pa.Table:
    user = (n_users * rng.random(n) ** 1.6).astype(np.int64)  # skewed activity
    home = user % len(DOMAINS)
    domain = np.where(rng.random(n) < 0.6, home, rng.integers(0, len(DOMAINS), n))
    item = (n_items * rng.random(n) ** 2.5).astype(np.int64)  # skewed popularity
    ts = T0 + rng.integers(0, 2000, n) * DAY + rng.integers(0, 3, n) * 3600  # many same-time ties
    dup = rng.random(n) < 0.02  # an exact copy of another row of the chunk
    src = rng.integers(0, n, n)
    user[dup], domain[dup], item[dup], ts[dup] = (
        user[src[dup]],
        domain[src[dup]],
        item[src[dup]],
        ts[src[dup]],
    )
    return pa.table(
        {
            "user_id": _prefixed("U", user),
            "item_id": _prefixed("I", item),
            "ts": pa.array(ts, pa.int64()),
            "rating": pa.nulls(n, pa.float64()),
            "source_line": pa.array(np.arange(first_line, first_line + n), pa.int64()),  # the raw order
            "domain": pc.take(pa.array(DOMAINS), pa.array(domain)),
        }
    )


def _titles(rng: np.random.Generator, idx: np.ndarray) -> list[str | None]:
    a = rng.integers(0, len(ADJECTIVES), len(idx))
    b = rng.integers(0, len(NOUNS), len(idx))
    kind = rng.random(len(idx))
    out: list[str | None] = []
    for i, x, y, k in zip(idx.tolist(), a.tolist(), b.tolist(), kind.tolist(), strict=True):
        if k < 0.01:
            out.append(None)
        elif k < 0.03:
            out.append("  ab ")  # 2 characters once trimmed: no usable text
        elif k < 0.04:
            out.append("   ")
        else:
            out.append(
                f" {ADJECTIVES[x]} {NOUNS[y]} No. {i} " if k < 0.1 else f"{ADJECTIVES[x]} {NOUNS[y]} No. {i}"
            )
    return out


def _items(rng: np.random.Generator, domain: str, n_items: int) -> pa.Table:
    idx = np.arange(n_items)
    idx = idx[idx % 33 != 7]  # ~3% of items have no record at all
    again = idx[rng.random(len(idx)) < 0.05]  # a later, corrected record
    ids = np.concatenate([idx, again])
    n = len(ids)
    return pa.table(
        {
            "item_id": _prefixed("I", ids),
            "domain": pa.array([domain] * n, pa.string()),
            "title": pa.array(_titles(rng, ids), pa.string()),
            "categories": pa.array([[domain, " Leaf "]] * n, pa.list_(pa.string())),
            "description": pa.nulls(n, pa.string()),
            "extra": pa.nulls(n, pa.string()),
        }
    )


def write_bronze(root: Path, n_rows: int, seed: int = 0) -> dict[str, int]:
    """Write n_rows bronze events of DOMAINS and their items under `root`; return the sizes."""
    n_users, n_items = shape(n_rows)
    rng = np.random.default_rng(seed)
    with DatasetWriter(BRONZE_INTERACTIONS, root, "bench") as w:
        for lo in range(0, n_rows, CHUNK_ROWS):
            w.write(_events(rng, min(CHUNK_ROWS, n_rows - lo), n_users, n_items, lo + 1))
    with DatasetWriter(BRONZE_ITEMS, root, "bench") as w:
        for domain in DOMAINS:
            w.write(_items(rng, domain, n_items))
        n_item_rows = w.rows
    return {"events": n_rows, "users": n_users, "items_per_domain": n_items, "item_records": n_item_rows}
