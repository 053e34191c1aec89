"""Benchmark 2: ingest throughput on Amazon-2023 gz JSONL vs pandas.read_json and plain gzip.

The files come from the project's synthetic generator (cprec_core/ingest/synth.py: reviews and
item metadata of 7 domains, Amazon Reviews 2023 field layout). Contenders read the same files:
`gzip` only decompresses them with the gzip module (the floor the target is stated against), `isal`
with ISA-L (the decompressor of the project's column-wise reader), `pandas` parses every line with
`pd.read_json(path, lines=True)` (no validation, nothing written), `project` is
cprec_core.ingest.run.run_ingest: parse, validate, quarantine and write bronze Parquet. MB/s is
over the uncompressed JSON bytes.
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.common import BenchError, measure, timed
from cprec_core.config import SynthConfig, load_config
from cprec_core.ingest.synth import generate_synthetic

CHUNK = 1 << 20


def _files(raw: str) -> list[Path]:
    return sorted(Path(raw).glob("*.jsonl.gz"))


def run_gzip(raw: str, isal: bool = False) -> dict[str, Any]:
    """Decompress every file in 1 MiB reads, counting bytes and lines: with the gzip module (the
    floor), or with ISA-L (python-isal, the decompressor the project's column-wise reader uses)."""
    from isal import igzip

    n_bytes = n_lines = 0
    with timed() as t:
        for f in _files(raw):
            with (igzip if isal else gzip).open(f, "rb") as g:
                while block := g.read(CHUNK):
                    n_bytes += len(block)
                    n_lines += block.count(b"\n")
    return {**t, "rows": n_lines, "bytes": n_bytes}


def run_pandas(raw: str) -> dict[str, Any]:
    """`pd.read_json(path, lines=True)` on every file, as a user would load them."""
    import pandas as pd

    rows = 0
    with timed() as t:
        for f in _files(raw):
            rows += len(pd.read_json(f, lines=True, compression="gzip"))
    return {**t, "rows": rows}


def run_project(raw: str, root: str) -> dict[str, Any]:
    """run_ingest: every file parsed, validated and written as bronze + quarantine, the domains on
    as many threads as the ingest task runs them by default (orchestration.workers: the CPUs)."""
    from cprec_core.fanout import on_threads
    from cprec_core.ingest.run import run_ingest

    cfg = load_config(None, [f"paths.root={root}", f"ingest.sources=[{{format: amazon2023, path: {raw}}}]"])
    workers = cfg.orchestration.worker_count()
    with timed() as t:
        out = run_ingest(cfg, map_domains=on_threads(workers))
    return {**t, "rows": out["rows_in"], "kept": out["kept"], "threads": workers}


def write_generic(root: str, out: str) -> None:
    """The project's bronze interactions as the generic layout's Parquet, one file per domain (the
    contract a user's converter writes: user_id, item_id, timestamp in seconds, rating)."""
    from cprec_core.artifacts import read_table
    from cprec_core.schema import BRONZE_INTERACTIONS

    bronze = read_table(BRONZE_INTERACTIONS, Path(root)).sort_by("source_line")
    for domain in sorted(set(bronze["domain"].to_pylist())):
        rows = bronze.filter(pc.equal(bronze["domain"], domain))
        columns = {"user_id": "user_id", "item_id": "item_id", "timestamp": "ts", "rating": "rating"}
        table = pa.table({name: rows[column] for name, column in columns.items()})
        (Path(out) / domain).mkdir(parents=True)
        pq.write_table(table, Path(out) / domain / "interactions.parquet")


def run_generic(generic: str, root: str) -> dict[str, Any]:
    """run_ingest over the generic layout's Parquet files, on the task's default threads."""
    from cprec_core.fanout import on_threads
    from cprec_core.ingest.run import run_ingest

    cfg = load_config(None, [f"paths.root={root}", f"ingest.sources=[{{format: generic, path: {generic}}}]"])
    workers = cfg.orchestration.worker_count()
    with timed() as t:
        out = run_ingest(cfg, map_domains=on_threads(workers))
    return {**t, "rows": out["rows_in"], "kept": out["kept"]}


def run(work: Path, quick: bool) -> dict[str, Any]:
    """Generate the raw files, then time each reader on them."""
    n = 50_000 if quick else 1_000_000
    raw, root = work / "raw", work / "root"
    shutil.rmtree(work, ignore_errors=True)
    synth = SynthConfig(
        out_dir=raw, n_interactions=n, n_users=max(2000, n // 20), n_items_per_domain=max(300, n // 100)
    )
    t0 = time.perf_counter()
    generate_synthetic(synth)
    gen_s = time.perf_counter() - t0
    contenders = {
        "gzip": measure("bench.ingest:run_gzip", {"raw": str(raw)}),
        "isal": measure("bench.ingest:run_gzip", {"raw": str(raw), "isal": True}),
        "pandas": measure("bench.ingest:run_pandas", {"raw": str(raw)}),
        "project": measure("bench.ingest:run_project", {"raw": str(raw), "root": str(root)}),
    }
    n_bytes = contenders["gzip"]["bytes"]
    for name, c in contenders.items():
        if c["rows"] != contenders["gzip"]["rows"]:
            raise BenchError(
                f"ingest: {name} read {c['rows']} rows, the files hold {contenders['gzip']['rows']}"
            )
        c["mb_per_s"] = n_bytes / 1e6 / c["seconds"]
        c["rows_per_s"] = c["rows"] / c["seconds"]
    write_generic(str(root), str(work / "generic"))
    generic = measure(
        "bench.ingest:run_generic", {"generic": str(work / "generic"), "root": str(work / "root-g")}
    )
    generic["rows_per_s"] = generic["rows"] / generic["seconds"]
    files = _files(str(raw))
    compressed = sum(f.stat().st_size for f in files)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "interactions": n,
        "files": len(files),
        "compressed_bytes": compressed,
        "uncompressed_bytes": n_bytes,
        "generate_s": round(gen_s, 1),
        "contenders": contenders,
        "generic_parquet": generic,
    }
