"""Hand-made bronze for the behaviors tests: write it with the real writers, run the real stage.

An event list is in raw-file order: each event's `source_line` is its 1-based position among the
events of its domain (one raw file per domain, as ingest reads them).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa

from cprec_core.artifacts import read_table, write_table
from cprec_core.behaviors import build_behaviors
from cprec_core.config import BehaviorsConfig, Config, DomainsConfig, DuckDBConfig, PathsConfig
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    SILVER_EVENTS,
)

Event = tuple[str, str, str, int]  # (domain, user_id, item_id, ts)
Item = tuple[str, str, str | None, list[str]]  # (domain, item_id, title, categories)


def titled(events: list[Event]) -> list[Item]:
    """One item record with a usable title for every item the events mention."""
    pairs = sorted({(d, i) for d, _, i, _ in events})
    return [(d, i, f"Title of {i}", ["Root", f"Leaf {i}"]) for d, i in pairs]


def lines(events: list[Event]) -> list[int]:
    """Each event's 1-based line in its domain's raw file: events are listed in file order."""
    seen: Counter[str] = Counter()
    out = []
    for d, *_ in events:
        seen[d] += 1
        out.append(seen[d])
    return out


def build(
    root: Path,
    events: list[Event],
    items: list[Item] | None = None,
    pretrain: tuple[str, ...] = ("A",),
    downstream: tuple[str, ...] = (),
    k_core: int = 1,
    min_sequence_len: int = 3,
    threads: int = 1,
    progress: bool = False,
    user_fraction: dict[str, float] | None = None,
    tie_break: str = "source_order",
    extras: dict[str, str] | None = None,
) -> dict:
    """Write bronze from tuples, run build_behaviors on it, return its result dict (`extras`: an
    item's other source fields, as bronze keeps them in `extra`)."""
    items = titled(events) if items is None else items
    d, u, i, t = (list(c) for c in zip(*events, strict=True))
    write_table(
        BRONZE_INTERACTIONS,
        root,
        pa.table(
            {"user_id": u, "item_id": i, "ts": t, "rating": [None] * len(t), "source_line": lines(events)}
            | {"domain": d},
            schema=INTERACTIONS_SCHEMA,
        ),
    )
    dom, item, title, cats = (list(c) for c in zip(*items, strict=True))
    n = len(item)
    write_table(
        BRONZE_ITEMS,
        root,
        pa.table(
            {"item_id": item, "domain": dom, "title": title, "categories": cats}
            | {"description": [None] * n, "extra": [(extras or {}).get(i, "{}") for i in item]},
            schema=ITEMS_SCHEMA,
        ),
    )
    cfg = config(
        root, pretrain, downstream, k_core, min_sequence_len, threads, user_fraction or {}, tie_break
    )
    return build_behaviors(cfg, progress)


def config(
    root,
    pretrain,
    downstream=(),
    k_core=1,
    min_sequence_len=3,
    threads=1,
    user_fraction=None,
    tie_break="source_order",
) -> Config:
    return Config(
        paths=PathsConfig(root=root),
        domains=DomainsConfig(pretrain=list(pretrain), downstream=list(downstream)),
        behaviors=BehaviorsConfig(
            k_core=k_core,
            min_sequence_len=min_sequence_len,
            user_fraction=user_fraction or {},
            tie_break=tie_break,
            duckdb=DuckDBConfig(memory_limit="256MB", threads=threads),
        ),
    )


def rows(artifact, root: Path) -> list[tuple]:
    """An artifact's rows as sorted tuples in schema column order."""
    table = read_table(artifact, root)
    return sorted(zip(*(table[c].to_pylist() for c in artifact.schema.names), strict=True))


def events_of(root: Path) -> list[tuple]:
    return rows(SILVER_EVENTS, root)  # (domain, user_id, position, item_id, ts, split)


# --- 20_int_events (dedup) ------------------------------------------------------------------------
