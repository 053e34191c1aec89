"""Behaviour organisation: bronze interactions and items → silver sequences, splits and stats.

Reads `bronze.interactions` and `bronze.items`; writes `silver.items`, `silver.events`,
`silver.mixed` and `silver.stats` (cprec_core/schema.py). Implements PAPER.md §2 (domain-specific
and all-domain mixed sequences) and the leave-one-out split of §6.

All the work runs in DuckDB, out of core, on the files in sql/ (read `ls sql/` as the DAG):
items with their text judged → integer surrogate keys for users and items (in id order) → one
pass over bronze that collapses duplicates and flags the user sample and the text filter →
iterative k-core → chronological sequences with their split, ids joined back → item catalogue →
mixed train sequences → per-step counts from grouped aggregates. Every large join, group-by,
window and sort runs on integer keys. Python only orders the SQL files, loops the k-core pass to
its fixed point and streams the final tables, sorted by their keys, into the artifact writers (so
two runs write byte-identical files).

Every step but the mixed sequences is per domain, so a rebuild is partial when it can be: the
domains whose bronze partitions are unchanged since the silver on disk was built (by this code and
config) keep their silver.events partitions as they are (linked, not rewritten) and their rows of
the other artifacts; only the changed domains go through the SQL, then the mixed sequences are
rebuilt over every domain (sql/55_fct_kept) — unless no pretrain domain changed: then silver.mixed
(pretrain train events only) is kept as it is too. Each file is cut into row groups per partition,
so a partial rebuild writes the bytes a full one writes.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import Progress

from cprec_core import sql
from cprec_core.artifacts import (
    ArtifactError,
    DatasetWriter,
    Manifest,
    code_version,
    config_hash,
    parquet_files,
    partition_files,
    partition_fingerprints,
    read_manifest,
    verify,
)
from cprec_core.config import Config
from cprec_core.errors import UserError
from cprec_core.fanout import DomainMap
from cprec_core.locks import holds_run_lock
from cprec_core.paths import scratch_dir
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    SILVER_EVENTS,
    SILVER_ITEMS,
    SILVER_MIXED,
    SILVER_STATS,
    Artifact,
)

BATCH_ROWS = 128 * 1024  # rows per streamed Arrow batch (= the writer's row group): bounds memory

# sql/ files in DAG order around the k-core loop (41_int_kcore_step, then 42 and 43 to its fixed point).
CLEANING = (
    "10_stg_interactions",
    "11_stg_items",
    "15_int_user_keys",
    "16_int_item_keys",
    "20_int_events",
    "40_int_kcore",
)
FINAL = ("50_fct_events", "51_dim_items", "70_fct_stats")  # per domain; then (55_fct_kept,) 60_fct_mixed

# Final tables of sql/, the artifact each becomes and the columns that sort it as the artifact's
# key does (surrogate keys follow their ids' order, so the sort hashes no strings).
OUTPUTS: tuple[tuple[str, Artifact, tuple[str, ...]], ...] = (
    ("dim_items", SILVER_ITEMS, ("item_key",)),
    ("fct_events", SILVER_EVENTS, ("domain", "user_key", "position")),
    ("fct_mixed", SILVER_MIXED, ("user_key", "position")),
    ("fct_stats", SILVER_STATS, SILVER_STATS.key),
)
SILVER = tuple(artifact for _, artifact, _ in OUTPUTS)


class BehaviorsError(UserError, ValueError):
    """The bronze data cannot serve the configured domains."""


def behaviors_config_hash(cfg: Config) -> str:
    """Hash of what decides the silver content: `behaviors` (minus DuckDB resources) and `domains`.

    `behaviors.duckdb` (memory, threads, spill dir) is left out: it changes speed, not results.
    """
    return config_hash(cfg.behaviors.model_dump(mode="json", exclude={"duckdb"}), cfg.domains)


@dataclass(frozen=True)
class KeptDomain:
    """One domain's silver, built earlier (the run on disk, or a fan-out task), taken as it is."""

    events: dict[str, Path]  # its silver.events partition files, by path within the artifact
    items: list[str]  # the silver.items files that hold its rows (filtered to it when read)
    stats: list[str]  # the silver.stats files that hold its rows
    duplicates: dict[str, int]  # its duplicate_item_records entry
    kcore_iterations: int | None  # its k-core passes; None when built beside other domains


@holds_run_lock
def build_behaviors(
    cfg: Config, progress: bool = False, map_domains: DomainMap | None = None
) -> dict[str, Any]:
    """Build the four silver artifacts from bronze; return counts, k-core passes and fingerprints.

    Only the configured domains whose bronze changed since the silver on disk was built are built
    again (see the module docstring). With `map_domains` (fanout.py), each of them is built by its
    own call (a task, on threads or Dask) into a staging directory, then joined here; else they go
    through one DuckDB in this process.

    The returned dict holds `counts` ({domain: {step: {n_users, n_items, n_events}}}),
    `kcore_iterations` (k-core passes that removed events; in a partial rebuild, the rebuilt domains'
    passes), `dropped_without_text` ({domain: events dropped because their item has no usable
    title}), `rebuilt_domains` and `kept_domains`, `fingerprints` and `rows` per artifact name,
    `config_hash`, `seconds` and `step_seconds` (per SQL file and per write).
    """
    started = time.perf_counter()
    root = cfg.root
    bronze = bronze_by_domain(root)
    kept = kept_on_disk(cfg, behaviors_config_hash(cfg), bronze)
    changed = [d for d in dict.fromkeys(cfg.all_domains) if d not in kept]  # a domain listed twice is one
    mixed = _mixed_on_disk(cfg) if kept and not set(changed) & set(cfg.domains.pretrain) else None
    if map_domains is None:
        summary = _build(cfg, root, changed, kept, bronze, progress, mixed)
    else:
        staging = scratch_dir(root) / f"behaviors-{uuid.uuid4().hex[:8]}"
        try:
            staged = dict(
                zip(changed, map_domains(partial(stage_domain, cfg, staging), changed), strict=True)
            )
            for domain in staged:  # a remote worker on other code would bring silver of that code
                built_by = read_manifest(SILVER_EVENTS, staging / domain).code_version
                if built_by != code_version():
                    raise BehaviorsError(
                        f"domain {domain}: built by code {built_by} on a worker, this run is "
                        f"{code_version()}: every orchestration.dask_address worker must run this checkout"
                    )
            joined = {**kept, **staged}
            summary = _build(cfg, root, [], joined, bronze, progress, mixed)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {
        **summary,
        "rebuilt_domains": changed,
        "kept_domains": sorted(kept),
        "kept_mixed": mixed is not None,
        "seconds": _since(started),
    }


def _mixed_on_disk(cfg: Config) -> dict[str, Path]:
    """silver.mixed's files on disk (kept_on_disk has checked they are of this code and config)."""
    directory = SILVER_MIXED.path(cfg.root)
    return {rel: directory / rel for rel in read_manifest(SILVER_MIXED, cfg.root).files}


def stage_domain(cfg: Config, staging: Path, domain: str) -> KeptDomain:
    """One domain's silver, built alone from the run root's bronze into `staging/<domain>` (a
    fan-out task's work: it writes nothing else, and takes no lock)."""
    d = cfg.domains
    only = d.model_copy(
        update={
            "pretrain": [domain] if domain in d.pretrain else [],
            "downstream": [domain] if domain in d.downstream else [],
        }
    )
    out = staging / domain
    summary = _build(cfg.model_copy(update={"domains": only}), out, [domain], {}, {}, False)
    return _kept_from(out, [domain], summary["kcore_iterations"])[domain]


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _build(
    cfg: Config,
    out: Path,
    rebuilt: list[str],
    kept: dict[str, KeptDomain],
    bronze: dict[str, str],
    progress: bool,
    mixed: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Run the SQL over the `rebuilt` domains' bronze (the run root's), join the `kept` domains'
    silver, and write the four silver artifacts under `out` (silver.mixed: the files `mixed`, as
    they are, when given)."""
    started = time.perf_counter()
    root = cfg.root
    b = cfg.behaviors
    inputs = {a.name: read_manifest(a, root).fingerprint for a in (BRONZE_INTERACTIONS, BRONZE_ITEMS)}
    cfg_hash = behaviors_config_hash(cfg)
    params = {
        "pretrain": [d for d in cfg.domains.pretrain if d in rebuilt],
        "downstream": [d for d in cfg.domains.downstream if d in rebuilt],
        "k": b.k_core,
        "min_title_chars": b.min_title_chars,
        "min_sequence_len": b.min_sequence_len,
        "tie_break": b.tie_break,
        "sample_domains": list(b.user_fraction),
        "sample_fractions": [float(f) for f in b.user_fraction.values()],
    }
    every_domain = {**params, "pretrain": cfg.domains.pretrain, "downstream": cfg.domains.downstream}
    seconds: dict[str, float] = {}
    with _working_db(cfg) as con, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("behaviors", total=len(CLEANING) + len(FINAL) + len(OUTPUTS) + 4)

        @contextlib.contextmanager
        def timed(name: str) -> Iterator[None]:
            bar.update(task, description=f"behaviors: {name}")
            t0 = time.perf_counter()
            yield
            seconds[name] = round(time.perf_counter() - t0, 3)
            bar.advance(task)

        only = rebuilt if kept else None  # a full build reads all of bronze (its errors name what is there)
        _register_bronze(con, "bronze_interactions", BRONZE_INTERACTIONS, root, only)
        _register_bronze(con, "bronze_items", BRONZE_ITEMS, root, only, row_order=True)
        with timed("00_cfg_domains"):
            sql.run(con, "00_cfg_domains", params)
            _check_coverage(con, root)
            params.update(_domain_index(con))
        for name in CLEANING:
            with timed(name):
                sql.run(con, name, params)
        with timed("41-43 k-core passes"):
            passes = [_kcore(con, b.k_core)] if rebuilt else []
        for name in FINAL:
            with timed(name):
                sql.run(con, name, params)
        with timed("55_fct_kept"):
            duplicates = {**_duplicates(con), **{d: k.duplicates for d, k in kept.items()}}
            if kept:
                _register_kept(con, kept, set() if mixed is not None else set(cfg.domains.pretrain))
                sql.run(con, "55_fct_kept")
                sql.run(con, "00_cfg_domains", every_domain)  # the mixed sequences span every domain
        if mixed is None:
            with timed("60_fct_mixed"):
                sql.run(con, "60_fct_mixed", every_domain)
        counts = _counts(con)
        _check_no_domain_lost(con, cfg, counts)
        dropped = {d: c["sample"]["n_events"] - c["text"]["n_events"] for d, c in counts.items()}
        # domains are independent in the k-core: a build of all of them needs the most any one needs
        iterations = max(
            [*passes, *(k.kcore_iterations for k in kept.values() if k.kcore_iterations)], default=0
        )
        extra = {
            "kcore_iterations": iterations,
            "dropped_without_text": dropped,
            "duplicate_item_records": dict(sorted(duplicates.items())),
            "inputs": inputs,
            "bronze_by_domain": {d: bronze.get(d) for d in cfg.all_domains},
        }
        manifests = {}
        for table, artifact, order in OUTPUTS:
            with timed(f"write {artifact.name}"):
                adopt = {d: k.events for d, k in kept.items()} if artifact is SILVER_EVENTS else {}
                if artifact is SILVER_MIXED and mixed is not None:
                    adopt = {"": mixed}
                manifests[artifact.name] = _export(con, table, artifact, order, out, cfg_hash, extra, adopt)
    return {
        "counts": counts,
        "kcore_iterations": iterations,
        "dropped_without_text": dropped,
        "duplicate_item_records": extra["duplicate_item_records"],
        "fingerprints": {name: m.fingerprint for name, m in manifests.items()},
        "rows": {name: m.rows for name, m in manifests.items()},
        "config_hash": cfg_hash,
        "seconds": _since(started),
        "step_seconds": seconds,
    }


def bronze_by_domain(root: Path) -> dict[str, str]:
    """domain → fingerprint of its bronze partitions (interactions and items), from the manifests."""
    inter = partition_fingerprints(read_manifest(BRONZE_INTERACTIONS, root), "domain")
    items = partition_fingerprints(read_manifest(BRONZE_ITEMS, root), "domain")
    return {d: config_hash(inter.get(d), items.get(d)) for d in sorted(set(inter) | set(items))}


def kept_on_disk(cfg: Config, cfg_hash: str, bronze: dict[str, str]) -> dict[str, KeptDomain]:
    """The configured domains whose silver on disk can stay: that silver is one complete build by
    this code and config, from the same bronze partitions of the domain. {} (build every domain)
    when any of that does not hold, or when no domain changed."""
    root = cfg.root
    try:
        manifests = {a.name: verify(a.path(root)) for a in SILVER}
    except ArtifactError:
        return {}
    built = manifests[SILVER_EVENTS.name].extra.get("bronze_by_domain")
    same_build = all(
        m.config_hash == cfg_hash
        and m.code_version == code_version()
        and m.extra.get("bronze_by_domain") == built
        for m in manifests.values()
    )
    if not built or not same_build:
        return {}
    unchanged = [d for d in cfg.all_domains if built.get(d) is not None and built.get(d) == bronze.get(d)]
    if len(unchanged) == len(cfg.all_domains):
        return {}  # nothing changed (the stage reran for another reason): a plain full build
    return _kept_from(root, unchanged, None)


def _kept_from(silver_root: Path, domains: list[str], kcore_iterations: int | None) -> dict[str, KeptDomain]:
    """`domains` of the silver under `silver_root`, as KeptDomains (its manifests read once)."""
    events = read_manifest(SILVER_EVENTS, silver_root)
    parts = partition_files(events, SILVER_EVENTS.path(silver_root), "domain")
    items, stats = parquet_files(SILVER_ITEMS, silver_root), parquet_files(SILVER_STATS, silver_root)
    return {
        d: KeptDomain(
            events=parts.get(d, {}),
            items=items,
            stats=stats,
            duplicates=events.extra["duplicate_item_records"][d],
            kcore_iterations=kcore_iterations,
        )
        for d in domains
    }


def _register_bronze(
    con: duckdb.DuckDBPyConnection,
    view: str,
    artifact: Artifact,
    root: Path,
    domains: list[str] | None,
    row_order: bool = False,
) -> None:
    """Bronze of `domains` only (a partial build reads no other partition; None: all of it) as a view."""
    if domains is None:
        files = parquet_files(artifact, root)
    else:
        parts = partition_files(read_manifest(artifact, root), artifact.path(root), "domain")
        files = [str(path) for d in sorted(parts) if d in domains for path in sorted(parts[d].values())]
    empty = artifact.schema.empty_table()  # a join of built domains only: no bronze to read
    if row_order:
        empty = empty.append_column("filename", pa.array([], pa.string()))
        empty = empty.append_column("file_row_number", pa.array([], pa.int64()))
    _register_files(con, view, files, empty, row_order)


def _register_files(
    con: duckdb.DuckDBPyConnection, view: str, files: list[str], empty: pa.Table, row_order: bool = False
) -> None:
    """`files` as the view `view`, or `empty` (the same columns) when there are none."""
    if files:
        sql.register_parquet(con, view, files, row_order=row_order)
    else:
        con.from_arrow(empty).create_view(view, replace=True)


def _register_kept(con: duckdb.DuckDBPyConnection, kept: dict[str, KeptDomain], events_of: set[str]) -> None:
    """The kept domains' silver as the views sql/55_fct_kept joins: the events of those in
    `events_of` (what the mixed sequences read; silver.events itself takes kept partitions as they
    are), and every kept domain's items and stats rows."""
    files = sorted(str(p) for d, k in kept.items() if d in events_of for p in k.events.values())
    _register_files(con, "kept_events", files, SILVER_EVENTS.schema.empty_table())
    for view, files_of, artifact in (
        ("kept_items", lambda k: k.items, SILVER_ITEMS),
        ("kept_stats", lambda k: k.stats, SILVER_STATS),
    ):
        takers: dict[str, list[str]] = {}  # file -> the kept domains whose rows it holds: read once
        for d, k in sorted(kept.items()):
            for f in files_of(k):
                takers.setdefault(f, []).append(d)
        rows = [
            pq.read_table(f, schema=artifact.schema).filter(pc.field("domain").isin(ds))
            for f, ds in sorted(takers.items())
        ]
        con.from_arrow(pa.concat_tables(rows)).create_view(view, replace=True)


def _domain_index(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """cfg_domains' domains in domain_index order, and their count: the SQL after 00_cfg_domains
    turns a sequence_key into its domain with these (bound, so no 10 M-row join does it)."""
    names = [r[0] for r in con.sql("select domain from cfg_domains order by domain_index").fetchall()]
    return {"domain_names": names, "n_domains": len(names)}


def _duplicates(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    """Per built domain, the item records set aside as duplicates."""
    return {
        r["domain"]: {k: r[k] for k in ("n_items_with_duplicates", "n_records_set_aside")}
        for r in sql.query(con, "13_stg_item_duplicates").to_pylist()
    }


@contextlib.contextmanager
def _working_db(cfg: Config) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB database that spills to its own throw-away directory in the spill
    directory, so tables can exceed behaviors.duckdb.memory_limit (22 % faster at 10 M events than
    an on-disk working database, which writes every table it makes)."""
    scratch = sql.scratch_dir(cfg.behaviors.duckdb, cfg.root)
    with tempfile.TemporaryDirectory(prefix="behaviors-", dir=scratch) as tmp:
        spill = cfg.behaviors.duckdb.model_copy(update={"temp_directory": Path(tmp)})
        with sql.connect(spill, cfg.root) as con:
            yield con


def _check_coverage(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Raise naming each configured domain without bronze events or items, and what bronze has."""
    rows = sql.query(con, "12_stg_domain_coverage").to_pylist()
    problems = []
    for column, artifact in (("n_bronze_events", BRONZE_INTERACTIONS), ("n_bronze_items", BRONZE_ITEMS)):
        present = ", ".join(r["domain"] for r in rows if r[column] > 0) or "none"
        for r in rows:
            if r["role"] is not None and r[column] == 0:
                problems.append(
                    f"domains.{r['role']}: domain {r['domain']!r} has no rows in "
                    f"{artifact.path(root)} (it has: {present})"
                )
    if problems:
        raise BehaviorsError("; ".join(problems))


STEP_ORDER = ("bronze", "dedup", "sample", "text", "kcore", "sequences")


def _why_lost(con: duckdb.DuckDBPyConnection, cfg: Config, domain: str, step: str, before: dict) -> str:
    """What the step that emptied a domain did to it, and the setting or field to look at."""
    b = cfg.behaviors
    if step == "sample":
        share = b.user_fraction.get(domain)
        return f"behaviors.user_fraction={share} kept too few of its {before['n_users']:,} users"
    if step == "text":
        row = next(r for r in sql.query(con, "14_stg_item_fields").to_pylist() if r["domain"] == domain)
        if row["n_without_title"] == row["n_items"]:
            present = ", ".join(row["fields_present"]) or "none besides the id"
            cause = f"no title field; fields present: {present}; map one with ingest.sources[].fields.title"
        else:
            cause = f"titles shorter than behaviors.min_title_chars={b.min_title_chars}"
        return f"{row['n_items']:,} items, {row['n_with_text']:,} with text ({cause})"
    if step == "kcore":
        return f"no user and item keep behaviors.k_core={b.k_core} events of {before['n_events']:,}"
    return f"no user has behaviors.min_sequence_len={b.min_sequence_len} events of {before['n_events']:,}"


def _check_no_domain_lost(con: duckdb.DuckDBPyConnection, cfg: Config, counts: dict) -> None:
    """Fail, naming the step and why, when a configured domain ends below the configured minimum."""
    b = cfg.behaviors
    for domain in cfg.all_domains:
        steps = counts.get(domain, {})
        low = [
            s
            for s in STEP_ORDER
            if s in steps
            and (steps[s]["n_events"] < b.min_domain_events or steps[s]["n_users"] < b.min_domain_users)
        ]
        if not low or low[0] in ("bronze", "dedup"):  # _check_coverage names a domain without bronze
            continue
        step = low[0]
        before = steps[STEP_ORDER[STEP_ORDER.index(step) - 1]]
        role = "downstream" if domain in cfg.domains.downstream else "pretrain"
        raise BehaviorsError(
            f"domains.{role}: domain {domain}: the {step} step left {steps[step]['n_events']:,} events of "
            f"{steps[step]['n_users']:,} users (behaviors.min_domain_events={b.min_domain_events}, "
            f"min_domain_users={b.min_domain_users}): {_why_lost(con, cfg, domain, step, before)}"
        )


def _kcore(con: duckdb.DuckDBPyConnection, k: int) -> int:
    """Run the k-core to its fixed point; return the passes that removed events. The first pass
    recounts every user and item (41); later passes count only what the pass before deleted
    (42 once, then 43 until it deletes nothing): 10 M events 2.0 -> 1.35 s, the same table."""
    removed = sql.query(con, "41_int_kcore_step", {"k": k}).column(0)[0].as_py()
    if removed == 0:
        return 0
    sql.run(con, "42_int_kcore_counts", {"k": k})
    passes = 1
    while True:
        sql.run(con, "43_int_kcore_recheck", {"k": k})
        if con.sql("select count(*) from kcore_removed").fetchall()[0][0] == 0:
            return passes
        passes += 1


def _counts(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, dict[str, int]]]:
    """fct_stats as {domain: {step: {n_users, n_items, n_events}}}."""
    rows = con.sql("select domain, step, n_users, n_items, n_events from fct_stats").fetchall()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for domain, step, n_users, n_items, n_events in rows:
        counts.setdefault(domain, {})[step] = {"n_users": n_users, "n_items": n_items, "n_events": n_events}
    return counts


def _export(
    con: duckdb.DuckDBPyConnection,
    table: str,
    artifact: Artifact,
    order: tuple[str, ...],
    root: Path,
    cfg_hash: str,
    extra: dict[str, Any],
    adopt: dict[str, dict[str, Path]],
) -> Manifest:
    """Stream a final table, sorted by `order` (the artifact's key order), into the artifact; the
    partitions in `adopt` (by value; "" for an unpartitioned artifact's files) are taken as they
    are on disk instead.

    A partitioned artifact is read one partition at a time, so its row groups are cut per
    partition and a partition's file does not depend on the others. The write is atomic, with a
    manifest. Table and column names come from this module and schema.py, never from user input.
    """
    with DatasetWriter(artifact, root, cfg_hash) as writer:
        for files in adopt.values():
            writer.adopt(files)
        with _read_ahead(con, _export_queries(con, table, artifact, order, adopt)) as batches:
            for chunk in _fixed_chunks(batches, BATCH_ROWS):
                writer.write(chunk)
        writer.extra.update(extra)
    assert writer.manifest is not None  # set by a clean __exit__
    return writer.manifest


def _export_queries(
    con: duckdb.DuckDBPyConnection,
    table: str,
    artifact: Artifact,
    order: tuple[str, ...],
    adopt: dict[str, dict[str, Path]],
) -> list[tuple[str, dict[str, Any] | None]]:
    """The sorted reads of `table` that _export writes: one per partition value not in `adopt`
    (in value order), or one for the whole of an unpartitioned artifact (none when adopted). The
    table and column names come from this module and schema.py, never from user input; the
    partition value is bound."""
    columns = ", ".join(artifact.schema.names)
    col = artifact.partition
    if col is None:
        return [] if "" in adopt else [(f"select {columns} from {table} order by {', '.join(order)}", None)]
    values = sorted(r[0] for r in con.sql(f"select distinct {col} from {table}").fetchall())
    rest = ", ".join(c for c in order if c != col)
    query = f"select {columns} from {table} where {col} = $value order by {rest}"
    return [(query, {"value": v}) for v in values if v not in adopt]


_END = object()  # the reader thread's last item


@contextlib.contextmanager
def _read_ahead(
    con: duckdb.DuckDBPyConnection, queries: list[tuple[str, dict[str, Any] | None]], depth: int = 4
) -> Iterator[Iterator[tuple[int, pa.RecordBatch]]]:
    """The batches of each query in turn, as (query number, batch), read on a second connection
    to the same database by a thread while the caller writes the batches before them: DuckDB sorts
    on its threads while the Parquet encoder runs on the caller's (on 2 cores, writing 10 M events
    2.05 -> 1.7 s). At most `depth` batches wait in memory. Leaving the block early interrupts the
    query and stops the thread."""
    waiting: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    cursor = con.cursor()

    def hand_over(item: Any) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for number, (query, params) in enumerate(queries):
                for batch in cursor.sql(query, params=params).to_arrow_reader(BATCH_ROWS):
                    if not hand_over((number, batch)):
                        return
            hand_over(_END)
        except BaseException as error:  # re-raised in the caller's thread
            hand_over(error)

    def batches() -> Iterator[tuple[int, pa.RecordBatch]]:
        while (item := waiting.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    reader = threading.Thread(target=read, name="behaviors-export", daemon=True)
    reader.start()
    try:
        yield batches()
    finally:
        stop.set()
        cursor.interrupt()
        reader.join()
        cursor.close()


def _fixed_chunks(batches: Iterable[tuple[int, pa.RecordBatch]], rows: int) -> Iterator[pa.Table]:
    """Each query's rows (batches numbered by query, in order) re-cut at every `rows`-th row of
    that query. DuckDB's batch boundaries depend on its thread count; each chunk is a row group
    (per partition: one query is one partition), so fixed cuts make the files, and their
    fingerprints, the same on every machine."""
    for _, numbered in itertools.groupby(batches, key=operator.itemgetter(0)):
        pending: list[pa.RecordBatch] = []
        held = 0
        for _, batch in numbered:
            pending.append(batch)
            held += batch.num_rows
            while held >= rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, rows)
                rest = table.slice(rows)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield pa.Table.from_batches(pending)
