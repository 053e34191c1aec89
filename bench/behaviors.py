"""Benchmark 1: the behaviors stage (DuckDB SQL) vs pandas and Polars (lazy) doing the same work.

Every contender reads the same bronze Parquet (bench/data.py) and writes the stage's four outputs
(silver.events, silver.items, silver.mixed, silver.stats) by the rules of sql/. silver.events:
exact duplicates collapsed (each keeps its first raw line); an item's most complete bronze record
wins (a usable title, then a category, then a description; the last one of equally complete
records) and it has text only when its trimmed title has >= min_title_chars characters; events of
items without text are dropped; an iterative per-domain k-core on event counts of users
and items, to its fixed point; (domain, user) sequences of >= min_sequence_len events, ordered by
(ts, source_line, item_id), positions from 0, last = test, second last = valid, rest = train.
silver.items: the winning record of each item the events use, its title and the leaf of its
category path trimmed of RE2's `\\s` (sql/11). silver.mixed: the train events of the pretrain domains
of every user with events in two or more of them, merged by (ts, domain, position) (sql/60).
silver.stats: users, items and events per domain after each step (sql/70). The benchmark fails
unless every reference's four tables equal the project's (sorted by their keys). Each reference
also records when its silver.events was written ('events_seconds'): what the references did before
they wrote the other three.
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
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    SILVER_EVENTS,
    SILVER_ITEMS,
    SILVER_MIXED,
    SILVER_STATS,
    Artifact,
)

EVENT_COLS = ["domain", "user_id", "item_id", "ts", "source_line"]
EVENT_KEY = EVENT_COLS[:4]
SEQ = ["domain", "user_id"]
SILVER = (SILVER_EVENTS, SILVER_ITEMS, SILVER_MIXED, SILVER_STATS)
SPACE = "\t\n\f\r "  # what RE2's \s (sql/11's trim) matches
PRETRAIN = list(DOMAINS[:-1])


def bench_config(root: str, memory_limit: str = "2GB") -> Config:
    """The default behaviors rules (k=5, 3-char titles, >= 3 events) on the 7 benchmark domains."""
    return load_config(
        None,
        [
            f"paths.root={root}",
            f"domains.pretrain={PRETRAIN}",
            f"domains.downstream={[DOMAINS[-1]]}",
            f"behaviors.duckdb.memory_limit={memory_limit}",
            # synthetic titles come from theme word families shared by every domain, so at bench
            # scale they collide across catalogues; the guard is for real catalogues
            "corpus.max_downstream_overlap=1.0",
        ],
    )


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


STEPS = ("bronze", "dedup", "sample", "text", "kcore", "sequences")


def _rules(root: str) -> dict[str, Any]:
    b = bench_config(root).behaviors
    if b.user_fraction:
        raise BenchError("behaviors: the references implement no user sample (behaviors.user_fraction)")
    return {"k": b.k_core, "min_title_chars": b.min_title_chars, "min_len": b.min_sequence_len}


def run_pandas(root: str, out: str) -> dict[str, Any]:
    """The same rules in plain pandas, as a user would write them."""
    import pandas as pd

    def counts(df: pd.DataFrame, step: str) -> pd.DataFrame:
        g = df.groupby("domain")
        columns = {"n_users": g["user_id"].nunique(), "n_items": g["item_id"].nunique(), "n_events": g.size()}
        return pd.DataFrame(columns).reset_index().assign(step=step)

    def trimmed(text: pd.Series) -> pd.Series:
        text = text.str.strip(SPACE)
        return text.mask(text == "")

    r = _rules(root)
    t0 = time.perf_counter()
    files = parquet_files(BRONZE_INTERACTIONS, Path(root))
    ev = pd.concat([pd.read_parquet(f, columns=EVENT_COLS) for f in files], ignore_index=True)
    ev = ev[ev["domain"].isin(DOMAINS)].groupby(EVENT_KEY, as_index=False)
    ev = ev.agg(source_line=("source_line", "min"), n_copies=("source_line", "size"))
    dedup = ev
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
    ev = text = ev.merge(usable[["domain", "item_id"]], on=["domain", "item_id"])
    passes = 0
    while True:
        per_user = ev.groupby(SEQ)["ts"].transform("size")
        per_item = ev.groupby(["domain", "item_id"])["ts"].transform("size")
        keep = (per_user >= r["k"]) & (per_item >= r["k"])
        if keep.all():
            break
        ev, passes = ev[keep], passes + 1
    kcore = ev
    ev = ev[ev.groupby(SEQ)["ts"].transform("size") >= r["min_len"]]
    ev = ev.sort_values([*SEQ, "ts", "source_line", "item_id"], ignore_index=True)
    position = ev.groupby(SEQ).cumcount()
    n = ev.groupby(SEQ)["ts"].transform("size")
    ev["position"] = position.astype("int32")
    ev["split"] = np.select([position == n - 1, position == n - 2], ["test", "valid"], "train")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev[SILVER_EVENTS.schema.names].to_parquet(out_dir / f"{SILVER_EVENTS.name}.parquet", index=False)
    events_seconds = time.perf_counter() - t0

    used = ev[["domain", "item_id"]].drop_duplicates()
    leaf = items["categories"].map(lambda cs: cs[-1] if cs is not None and len(cs) else None)
    items = items.assign(title=trimmed(items["title"]), category=trimmed(leaf.astype("string")))
    silver_items = used.merge(items, on=["domain", "item_id"])[SILVER_ITEMS.schema.names]
    silver_items.to_parquet(out_dir / f"{SILVER_ITEMS.name}.parquet", index=False)
    pretrain = ev[ev["domain"].isin(PRETRAIN)]
    multi_domain = pretrain.groupby("user_id")["domain"].transform("nunique") >= 2
    mixed = pretrain[multi_domain & (pretrain["split"] == "train")]
    mixed = mixed.sort_values(["user_id", "ts", "domain", "position"], ignore_index=True)
    mixed["position"] = mixed.groupby("user_id").cumcount().astype("int32")
    mixed[SILVER_MIXED.schema.names].to_parquet(out_dir / f"{SILVER_MIXED.name}.parquet", index=False)
    stats = [counts(dedup, "dedup"), counts(text, "text"), counts(kcore, "kcore"), counts(ev, "sequences")]
    bronze = dedup.groupby("domain", as_index=False).agg(n_events=("n_copies", "sum"))
    stats.append(stats[0].drop(columns="n_events").merge(bronze).assign(step="bronze"))
    stats.append(stats[0].assign(step="sample"))  # no user sample: the sample step keeps every user
    grid = pd.MultiIndex.from_product([DOMAINS, STEPS], names=["domain", "step"])
    table = pd.concat(stats).set_index(["domain", "step"]).reindex(grid, fill_value=0).reset_index()
    table[SILVER_STATS.schema.names].to_parquet(out_dir / f"{SILVER_STATS.name}.parquet", index=False)
    return {
        "seconds": time.perf_counter() - t0,
        "events_seconds": events_seconds,
        "rows": len(ev),
        "kcore_iterations": passes,
    }


def run_polars(root: str, out: str) -> dict[str, Any]:
    """The same rules in Polars' lazy API (each k-core pass is one lazy query)."""
    import polars as pl

    def counts(df: pl.DataFrame, step: str) -> pl.DataFrame:
        return df.group_by("domain").agg(
            step=pl.lit(step),
            n_users=pl.col("user_id").n_unique().cast(pl.Int64),
            n_items=pl.col("item_id").n_unique().cast(pl.Int64),
            n_events=pl.len().cast(pl.Int64),
        )

    def trimmed(text: pl.Expr) -> pl.Expr:
        text = text.str.strip_chars(SPACE)
        return pl.when(text == "").then(None).otherwise(text)

    r = _rules(root)
    t0 = time.perf_counter()
    dedup = (
        pl.scan_parquet(parquet_files(BRONZE_INTERACTIONS, Path(root)))
        .select(EVENT_COLS)
        .filter(pl.col("domain").is_in(DOMAINS))
        .group_by(EVENT_KEY)
        .agg(pl.col("source_line").min(), n_copies=pl.len())
        .collect()
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
        .collect()
    )
    usable = items.lazy().filter(
        pl.col("title").str.strip_chars().str.len_chars().fill_null(0) >= r["min_title_chars"]
    )
    df = text = dedup.lazy().join(usable.select("domain", "item_id"), on=["domain", "item_id"]).collect()
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
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.write_parquet(out_dir / f"{SILVER_EVENTS.name}.parquet")
    events_seconds = time.perf_counter() - t0

    used = result.lazy().select("domain", "item_id").unique()
    leaf = pl.col("categories").list.last()
    silver_items = used.join(items.lazy(), on=["domain", "item_id"]).select(
        "domain", "item_id", title=trimmed(pl.col("title")), category=trimmed(leaf)
    )
    silver_items.collect().write_parquet(out_dir / f"{SILVER_ITEMS.name}.parquet")
    mixed = (
        result.lazy()
        .filter(pl.col("domain").is_in(PRETRAIN))
        .filter((pl.col("domain").n_unique().over("user_id") >= 2) & (pl.col("split") == "train"))
        .sort("user_id", "ts", "domain", "position")
        .with_columns(position=pl.int_range(pl.len()).over("user_id").cast(pl.Int32))
        .select(SILVER_MIXED.schema.names)
    )
    mixed.collect().write_parquet(out_dir / f"{SILVER_MIXED.name}.parquet")
    stats = [counts(dedup, "dedup"), counts(text, "text"), counts(df, "kcore"), counts(result, "sequences")]
    bronze = dedup.group_by("domain").agg(n_events=pl.col("n_copies").sum().cast(pl.Int64))
    stats.append(stats[0].drop("n_events").join(bronze, on="domain").with_columns(step=pl.lit("bronze")))
    stats.append(stats[0].with_columns(step=pl.lit("sample")))  # no user sample: it keeps every user
    grid = pl.DataFrame({"domain": list(DOMAINS)}).join(pl.DataFrame({"step": list(STEPS)}), how="cross")
    table = grid.join(pl.concat(stats, how="diagonal"), on=["domain", "step"], how="left").fill_null(0)
    table.select(SILVER_STATS.schema.names).write_parquet(out_dir / f"{SILVER_STATS.name}.parquet")
    return {
        "seconds": time.perf_counter() - t0,
        "events_seconds": events_seconds,
        "rows": result.height,
        "kcore_iterations": passes,
    }


def _sorted(artifact: Artifact, table: pa.Table) -> pa.Table:
    table = artifact.check(table.select(artifact.schema.names))
    return table.sort_by([(k, "ascending") for k in artifact.key])


def check_identical(root: Path, refs: dict[str, str]) -> dict[str, bool]:
    """{reference: its four silver tables equal the project's}; raises when one differs."""
    project = {artifact: _sorted(artifact, read_table(artifact, root)) for artifact in SILVER}
    same = {}
    for name, out in refs.items():
        for artifact in SILVER:
            path = Path(out) / f"{artifact.name}.parquet"
            if not _sorted(artifact, pq.read_table(path)).equals(project[artifact]):
                raise BenchError(f"behaviors: {name}'s {artifact.name} differs from the project's ({path})")
        same[name] = True
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
            refs[name] = str(root / f"{name}-silver")
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
