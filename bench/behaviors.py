"""Benchmark 1: the behaviors stage (DuckDB SQL) vs pandas and Polars (lazy) doing the same work.

Every contender reads the same bronze Parquet (bench/data.py) and produces silver.events by the
rules of sql/11-50: exact duplicates collapsed (each keeps its first raw line); an item's most
complete bronze record wins (a usable title, then a category, then a description; the last one of
equally complete records) and it has text only when its trimmed title has >= min_title_chars characters;
events of items without text are dropped; an iterative per-domain k-core on event counts of users
and items, to its fixed point; (domain, user) sequences of >= min_sequence_len events, ordered by
(ts, source_line, item_id), positions from 0, last = test, second last = valid, rest = train. The
benchmark fails unless every reference's table equals the project's (both sorted by the key). The
project also writes silver.items, silver.mixed and silver.stats in its time; the references write
only the events.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import BenchError, measure, polars_available
from bench.data import DOMAINS, write_bronze
from cprec_core.artifacts import parquet_files, read_table
from cprec_core.config import Config, load_config
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS, SILVER_EVENTS

EVENT_COLS = ["domain", "user_id", "item_id", "ts", "source_line"]
EVENT_KEY = EVENT_COLS[:4]
SEQ = ["domain", "user_id"]


def bench_config(root: str, memory_limit: str = "2GB") -> Config:
    """The default behaviors rules (k=5, 3-char titles, >= 3 events) on the 7 benchmark domains."""
    return load_config(
        None,
        [
            f"paths.root={root}",
            f"domains.pretrain={list(DOMAINS[:-1])}",
            f"domains.downstream={[DOMAINS[-1]]}",
            f"behaviors.duckdb.memory_limit={memory_limit}",
            # synthetic titles come from theme word families shared by every domain, so at bench
            # scale they collide across catalogues; the guard is for real catalogues
            "corpus.max_downstream_overlap=1.0",
        ],
    )


def _rules(root: str) -> dict[str, Any]:
    b = bench_config(root).behaviors
    return {"k": b.k_core, "min_title_chars": b.min_title_chars, "min_len": b.min_sequence_len}


def run_project(root: str, memory_limit: str = "2GB") -> dict[str, Any]:
    """cprec_core.behaviors.build_behaviors, as the pipeline runs it."""
    from cprec_core.behaviors import build_behaviors

    t0 = time.perf_counter()
    out = build_behaviors(bench_config(root, memory_limit))
    return {
        "seconds": time.perf_counter() - t0,
        "rows": out["rows"]["silver.events"],
        "kcore_iterations": out["kcore_iterations"],
        "step_seconds": out["step_seconds"],
    }


def run_pandas(root: str, out: str) -> dict[str, Any]:
    """The same rules in plain pandas, as a user would write them."""
    import pandas as pd

    r = _rules(root)
    t0 = time.perf_counter()
    files = parquet_files(BRONZE_INTERACTIONS, Path(root))
    ev = pd.concat([pd.read_parquet(f, columns=EVENT_COLS) for f in files], ignore_index=True)
    ev = ev[ev["domain"].isin(DOMAINS)].groupby(EVENT_KEY, as_index=False)["source_line"].min()
    item_files = parquet_files(BRONZE_ITEMS, Path(root))
    cols = ["domain", "item_id", "title", "categories", "description"]
    items = pd.concat([pd.read_parquet(f, columns=cols) for f in item_files], ignore_index=True)
    has_title = items["title"].str.strip().str.len().fillna(0) >= r["min_title_chars"]
    has_category = items["categories"].map(lambda cs: any(c.strip() for c in cs) if cs is not None else False)
    has_description = items["description"].str.strip().str.len().fillna(0) > 0
    items["completeness"] = 4 * has_title + 2 * has_category + has_description
    items["row"] = np.arange(len(items))  # files in manifest order: a later row is a later record
    items = items.sort_values(["completeness", "row"]).drop_duplicates(["domain", "item_id"], keep="last")
    usable = items[items["title"].str.strip().str.len().fillna(0) >= r["min_title_chars"]]
    ev = ev.merge(usable[["domain", "item_id"]], on=["domain", "item_id"])
    passes = 0
    while True:
        per_user = ev.groupby(SEQ)["ts"].transform("size")
        per_item = ev.groupby(["domain", "item_id"])["ts"].transform("size")
        keep = (per_user >= r["k"]) & (per_item >= r["k"])
        if keep.all():
            break
        ev, passes = ev[keep], passes + 1
    ev = ev[ev.groupby(SEQ)["ts"].transform("size") >= r["min_len"]]
    ev = ev.sort_values([*SEQ, "ts", "source_line", "item_id"], ignore_index=True)
    position = ev.groupby(SEQ).cumcount()
    n = ev.groupby(SEQ)["ts"].transform("size")
    ev["position"] = position.astype("int32")
    ev["split"] = np.select([position == n - 1, position == n - 2], ["test", "valid"], "train")
    ev[SILVER_EVENTS.schema.names].to_parquet(out, index=False)
    return {"seconds": time.perf_counter() - t0, "rows": len(ev), "kcore_iterations": passes}


def run_polars(root: str, out: str) -> dict[str, Any]:
    """The same rules in Polars' lazy API (each k-core pass is one lazy query)."""
    import polars as pl

    r = _rules(root)
    t0 = time.perf_counter()
    ev = (
        pl.scan_parquet(parquet_files(BRONZE_INTERACTIONS, Path(root)))
        .select(EVENT_COLS)
        .filter(pl.col("domain").is_in(DOMAINS))
        .group_by(EVENT_KEY)
        .agg(pl.col("source_line").min())
    )
    items = (
        pl.scan_parquet(parquet_files(BRONZE_ITEMS, Path(root)))  # files in manifest order
        .select("domain", "item_id", "title", "categories", "description")
        .with_row_index("row")
        .with_columns(
            completeness=4
            * (pl.col("title").str.strip_chars().str.len_chars().fill_null(0) >= r["min_title_chars"])
            + 2
            * pl.col("categories").list.eval(pl.element().str.strip_chars() != "").list.any().fill_null(False)
            + (pl.col("description").str.strip_chars().str.len_chars().fill_null(0) > 0)
        )
        .sort("completeness", "row")  # the most complete record, then the last, wins
        .group_by("domain", "item_id")
        .last()
        .filter(pl.col("title").str.strip_chars().str.len_chars().fill_null(0) >= r["min_title_chars"])
        .select("domain", "item_id")
    )
    df = ev.join(items, on=["domain", "item_id"]).collect()
    passes = 0
    while True:
        kept = (
            df.lazy()
            .filter((pl.len().over(SEQ) >= r["k"]) & (pl.len().over("domain", "item_id") >= r["k"]))
            .collect()
        )
        if kept.height == df.height:
            break
        df, passes = kept, passes + 1
    n = pl.len().over(SEQ)
    result = (
        df.lazy()
        .filter(n >= r["min_len"])
        .sort([*SEQ, "ts", "source_line", "item_id"])
        .with_columns(position=pl.int_range(pl.len()).over(SEQ).cast(pl.Int32), n=n)
        .with_columns(
            split=pl.when(pl.col("position") == pl.col("n") - 1)
            .then(pl.lit("test"))
            .when(pl.col("position") == pl.col("n") - 2)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("train"))
        )
        .select(SILVER_EVENTS.schema.names)
        .collect()
    )
    result.write_parquet(out)
    return {"seconds": time.perf_counter() - t0, "rows": result.height, "kcore_iterations": passes}


def _sorted(table: pa.Table) -> pa.Table:
    return SILVER_EVENTS.check(table.select(SILVER_EVENTS.schema.names)).sort_by(
        [(k, "ascending") for k in SILVER_EVENTS.key]
    )


def check_identical(root: Path, refs: dict[str, str]) -> dict[str, bool]:
    """{reference: its events equal the project's silver.events}; raises when one differs."""
    project = _sorted(read_table(SILVER_EVENTS, root))
    same = {}
    for name, path in refs.items():
        same[name] = _sorted(pq.read_table(path)).equals(project)
        if not same[name]:
            raise BenchError(f"behaviors: {name}'s silver.events differs from the project's ({path})")
    return same


def bench_size(work: Path, n_rows: int, contenders: list[str]) -> dict[str, Any]:
    """Generate bronze of n_rows events and time each contender on it."""
    root = work / f"rows-{n_rows}"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    data = write_bronze(root, n_rows)
    data["generate_s"] = round(time.perf_counter() - t0, 1)
    results: dict[str, Any] = {"rows": n_rows, "data": data, "contenders": {}}
    refs = {}
    for name in contenders:
        if name == "project":
            res = measure("bench.behaviors:run_project", {"root": str(root)})
        else:
            refs[name] = str(root / f"{name}-events.parquet")
            res = measure(f"bench.behaviors:run_{name}", {"root": str(root), "out": refs[name]})
        results["contenders"][name] = res
    results["identical"] = check_identical(root, refs)
    shutil.rmtree(root, ignore_errors=True)
    return results


REFERENCE_MAX = 10_000_000  # pandas and Polars hold everything in memory: beyond this, the project alone


def run(work: Path, quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    """Each size (default 1 M, 10 M, 50 M; quick 50 k, 200 k), the references up to REFERENCE_MAX."""
    refs = ["pandas", *(["polars"] if polars_available() else [])]
    sizes = sizes or ([50_000, 200_000] if quick else [1_000_000, 10_000_000, 50_000_000])
    plan = [(n, refs if n <= REFERENCE_MAX and (not quick or n == min(sizes)) else []) for n in sizes]
    results = [bench_size(work, n, ["project", *names]) for n, names in plan]
    note = None if polars_available() else "Polars is not installed: skipped (pip install polars==2.1.0)"
    return {"sizes": results, "note": note}
