"""Run the SQL files in `sql/` on DuckDB with bound parameters.

Values are always bound (`$name` parameters), never formatted into SQL text. Inputs are exposed
to SQL as views created from verified Parquet file lists, so SQL never sees a user path.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from cprec_core import paths
from cprec_core.config import DuckDBConfig
from cprec_core.resources import shipped

SQL_DIR = shipped("sql")
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


def sql_text(name: str) -> str:
    """The text of `sql/<name>.sql` (name without extension, e.g. '20_int_events')."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()


def scratch_dir(cfg: DuckDBConfig, root: Path) -> Path:
    """DuckDB's spill directory (also the place for a stage's throw-away working database)."""
    temp = cfg.temp_directory or paths.scratch_dir(root) / "duckdb"
    temp.mkdir(parents=True, exist_ok=True)
    return temp


@contextlib.contextmanager
def connect(cfg: DuckDBConfig, root: Path, database: str = ":memory:") -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with the out-of-core settings of `behaviors.duckdb`."""
    temp = scratch_dir(cfg, root)
    config = {
        "memory_limit": cfg.memory_limit,
        "threads": cfg.threads,
        "temp_directory": str(temp),
        "preserve_insertion_order": False,
    }
    with duckdb.connect(database, config=config) as con:
        yield con


def register_parquet(
    con: duckdb.DuckDBPyConnection, view: str, files: list[str], row_order: bool = False
) -> None:
    """Expose a list of Parquet files as a view named `view` (a fixed identifier, not user input).

    With `row_order`, the view also has `filename` and `file_row_number`, so SQL can tell which of
    two records came later (files are listed in manifest order).
    """
    if not _IDENT.match(view):
        raise ValueError(f"view name {view!r} must be a lower-case identifier")
    rel = con.read_parquet(files, hive_partitioning=False, filename=row_order, file_row_number=row_order)
    rel.create_view(view, replace=True)


def run(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any] | None = None) -> None:
    """Execute every statement of `sql/<name>.sql` with the parameters each statement uses.

    Statements are separated by a line holding only ';'-terminated SQL; each statement gets only
    the `$params` it mentions (DuckDB rejects unused named parameters).
    """
    for statement in _statements(sql_text(name)):
        used = {k: v for k, v in (params or {}).items() if re.search(rf"\${k}\b", statement)}
        con.execute(statement, used or None)


def query(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any] | None = None):
    """Run a single-statement SQL file and return its result as a pyarrow Table."""
    statements = _statements(sql_text(name))
    if len(statements) != 1:
        raise ValueError(f"sql/{name}.sql: query() needs exactly one statement, found {len(statements)}")
    used = {k: v for k, v in (params or {}).items() if re.search(rf"\${k}\b", statements[0])}
    return con.sql(statements[0], params=used or None).to_arrow_table()


def _statements(text: str) -> list[str]:
    """Split a SQL file on semicolons that end a line (comments stripped)."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]
