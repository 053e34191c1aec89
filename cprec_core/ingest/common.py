"""Shared machinery of the ingest readers: row records, field checks, batching, quarantine.

Reads: one raw file at a time, through a format reader's `records` iterator.
Writes: Arrow batches shaped like BRONZE_INTERACTIONS / BRONZE_ITEMS and QUARANTINE
(cprec_core/schema.py) handed to the caller's writers. DESIGN.md data flow step 1 (ingest).

A reader turns a file into `Record`s (one per source row, or one per broken line) and a parser
turns a record's value into a typed row or raises `RowError` with a specific reason such as
`field timestamp: expected int ms, got "2019-03-01"`. `ingest_file` does the rest: it batches
rows into Arrow tables of `ingest.batch_rows` (bounded memory) and sends every rejected row to
the quarantine, so that rows_in == kept + quarantined for every file.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import pyarrow as pa
from isal import igzip, isal_zlib

from cprec_core.config import IngestConfig, SourceConfig, check_domain_name
from cprec_core.errors import UserError
from cprec_core.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, QUARANTINE_SCHEMA

Table = Literal["interactions", "items"]
RAW_CHARS = 2000  # quarantine keeps the offending row cut to this many characters
UTF8_BOM = b"\xef\xbb\xbf"


class IngestError(UserError, ValueError):
    """A problem with the raw inputs as a whole (layout, names, too many bad rows)."""


class RowError(ValueError):
    """One source row is invalid; the message is the quarantine reason."""


class Record(NamedTuple):
    """One source row: `value` (a mapping) when it could be read, else `error` says why not."""

    line: int  # 1-based line (text files) or row (Parquet) number
    value: dict[str, Any] | None
    error: str | None
    raw: Any  # the row as read (str or mapping), rendered only when quarantined


# What other ecosystems call the fields cprec reads (MovieLens, RecBole's shipped datasets, Yelp,
# Amazon 2014/2023, Kaggle e-commerce dumps), by canonical name; a reader maps the first present
# one onto its own name when its own is absent. ingest.sources[].fields overrides them.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "userId", "uid", "user", "reviewerID", "customer_id", "visitorid"),
    "item": (
        "item_id",
        "itemId",
        "iid",
        "item",
        "movieId",
        "movie_id",
        "business_id",
        "product_id",
        "parent_asin",
        "asin",
        "itemid",
    ),
    "timestamp": ("timestamp", "ts", "time", "unixReviewTime", "event_time"),
    "rating": ("rating", "overall", "score", "stars"),
    "title": ("title", "movie_title", "item_name", "book_title", "product_title", "name", "text"),
    "categories": ("categories", "category", "genres", "genre", "class", "main_category"),
    "description": ("description", "desc", "summary"),
}


class FieldMap:
    """Which source field a reader reads as each of its own fields, for one file.

    `native` maps canonical names (FIELD_ALIASES' keys) to the reader's own field names;
    `configured` (ingest.sources[].fields) maps canonical names to the user's names and wins;
    else a field under the reader's own name is read as is; else the first FIELD_ALIASES name
    present is. `used` records every renaming done ({source name: reader's name}).
    """

    def __init__(
        self, native: dict[Table, dict[str, str]], table: Table, configured: dict[str, str], where: str
    ):
        known = {canon for names in native.values() for canon in names}
        unknown = sorted(set(configured) - known)
        if unknown:
            raise IngestError(
                f"{where}: ingest.sources[].fields {unknown}: this reader maps only {sorted(known)}"
            )
        self.native = native[table]
        self.configured = {k: v for k, v in configured.items() if k in self.native}
        self.where = where
        self.used: dict[str, str] = {}

    def _resolve(self, present: set[str], strict: bool) -> dict[str, str]:
        out = {}
        for canon, own in self.native.items():
            source = self.configured.get(canon)
            if source is not None and source not in present:
                if strict:
                    raise IngestError(
                        f"{self.where}: ingest.sources[].fields.{canon}={source!r} is not a field of it "
                        f"(fields: {', '.join(sorted(present))})"
                    )
                continue
            if source is None and own not in present:
                taken = set(self.native.values())
                source = next((a for a in FIELD_ALIASES[canon] if a in present and a not in taken), None)
            if source is not None and source != own:
                out[source] = own
        return out

    def rename_names(self, names: list[str]) -> list[str]:
        """A file header in the reader's names (the configured source names must be in it)."""
        renames = self._resolve(set(names), strict=True)
        self.used.update(renames)
        return [renames.get(n, n) for n in names]

    def apply(self, value: dict[str, Any]) -> dict[str, Any]:
        """One record (a JSON object) in the reader's names."""
        renames = self._resolve(set(value), strict=False)
        if not renames:
            return value
        self.used.update(renames)
        out = {k: v for k, v in value.items() if k not in renames}
        out.update({own: value[source] for source, own in renames.items()})
        return out


def mapped(records: Iterator[Record], fields: FieldMap) -> Iterator[Record]:
    """JSON records with their fields in the reader's names."""
    for rec in records:
        yield map_record(rec, fields)


def map_record(rec: Record, fields: FieldMap) -> Record:
    """One JSON record with its fields in the reader's names."""
    return rec if rec.value is None else rec._replace(value=fields.apply(rec.value))


@dataclass(frozen=True)
class RawFile:
    """A raw file found by a reader, with the functions that read and parse it."""

    path: Path
    table: Table
    domain: str
    records: Callable[[], Iterator[Record]]
    parse: Callable[[dict[str, Any]], tuple[Any, ...]]
    fields: FieldMap | None = None  # how the source's field names became the reader's
    # column-wise reading (ingest/columnar.py): Arrow tables of rows already valid, and a Record
    # for every other row; None = `records` only
    fast: Callable[[], Iterator[Record | pa.Table]] | None = None


@dataclass
class FileReport:
    """Row reconciliation of one raw file: rows_in must equal kept + quarantined."""

    source_file: str
    table: Table
    domain: str
    rows_in: int = 0
    kept: int = 0
    quarantined: int = 0
    fields: dict[str, str] | None = None  # {source field: reader's field} renamed while reading

    @property
    def bad_fraction(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


# --------------------------------------------------------------------------------------------
# Field checks (each raises RowError naming the field)


def printable(text: str) -> str:
    """`text` with anything UTF-8 cannot hold (lone surrogates) written as backslash escapes."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def show(value: Any) -> str:
    """A value as a reason shows it: JSON-like, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    text = printable(text)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked_text(value: str, name: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(f"field {name}: not valid Unicode (lone surrogate or undecodable bytes)") from None
    return value


def req_id(rec: dict[str, Any], name: str, label: str | None = None) -> str:
    """A required id: a non-empty string (integers are accepted and written as strings)."""
    label = label or name
    if name not in rec:
        raise RowError(f"field {label}: missing")
    value = rec[name]
    if value is None:
        raise RowError(f"field {label}: null")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RowError(f"field {label}: expected string id, got {show(value)}")
    if not value.strip():
        raise RowError(f"field {label}: empty")
    return _checked_text(value, label)


def opt_text(rec: dict[str, Any], name: str) -> str | None:
    """An optional string field (null or absent → None)."""
    value = rec.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(f"field {name}: expected string, got {show(value)}")
    return _checked_text(value, name)


def opt_rating(rec: dict[str, Any], name: str, bounds: tuple[float, float] | None = None) -> float | None:
    """An optional finite number, within `bounds` when given."""
    value = rec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RowError(f"field {name}: expected number, got {show(value)}")
    try:
        rating = float(value)
    except OverflowError:
        rating = math.inf
    if not math.isfinite(rating):
        raise RowError(f"field {name}: expected finite number, got {show(value)}")
    if bounds is not None and not bounds[0] <= rating <= bounds[1]:
        raise RowError(f"field {name}: {show(value)} outside [{bounds[0]:g}, {bounds[1]:g}]")
    return rating


def req_int(rec: dict[str, Any], name: str, unit: str) -> int:
    """A required integer (an integral float such as 1.5e9 is accepted); `unit` names it."""
    if name not in rec:
        raise RowError(f"field {name}: missing")
    value = rec[name]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise RowError(f"field {name}: expected int {unit}, got {show(value)}")


def check_ts(seconds: int, name: str, raw: int, unit: str, cfg: IngestConfig) -> int:
    """Reject timestamps outside [ingest.min_ts, ingest.max_ts] after conversion to seconds."""
    if not cfg.min_ts <= seconds <= cfg.max_ts:
        hint = "" if unit == "s" else f" = {seconds} s"
        raise RowError(
            f"field {name}: {raw} {unit}{hint} outside "
            f"[ingest.min_ts={cfg.min_ts}, ingest.max_ts={cfg.max_ts}]"
        )
    return seconds


def str_list(value: Any, name: str) -> list[str]:
    """A list of strings (null → empty list)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowError(f"field {name}: expected list of strings, got {show(value)}")
    return [_checked_text(v, name) for v in value]


def extra_json(rec: dict[str, Any], used: set[str]) -> str:
    """The fields no bronze column holds, as a JSON object (sorted keys: deterministic)."""
    rest = {k: v for k, v in rec.items() if k not in used}
    return json.dumps(rest, sort_keys=True, ensure_ascii=True, default=str)


# --------------------------------------------------------------------------------------------
# Line-oriented raw files


def open_binary(path: Path, fast: bool = False) -> IO[bytes]:
    """Open a raw file for binary reading; `.gz` files are decompressed on the fly. `fast` uses
    ISA-L (python-isal, the gzip module's interface at ~2.7x its speed on the bench's reviews), whose
    reader loses the rows of its last decompressed block when the stream breaks off: a reader that
    uses it reads a broken file again with the gzip module, which gives every line of a truncated
    file before the cut (of a damaged one, zlib too drops the output of its last call)."""
    if not path.name.endswith(".gz"):
        return open(path, "rb")
    return igzip.open(path, "rb") if fast else gzip.open(path, "rb")


def decode_line(line: bytes, line_no: int) -> tuple[str | None, str | None]:
    """(text, None) for a usable line, (None, reason) for a broken one."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if line_no == 1 and line.startswith(UTF8_BOM):  # an encoding signature, not data
        line = line[len(UTF8_BOM) :]
    if line.startswith(UTF8_BOM):
        return None, "UTF-8 byte-order mark inside the file (concatenated files?)"
    nul = line.find(b"\x00")
    if nul >= 0:
        return None, f"NUL byte at byte {nul + 1}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start + 1}"
    if not text.strip():
        return None, "empty line"
    return text, None


def ordinal_ts(position: int, cfg: IngestConfig) -> int:
    """The one time rule of order-only sources: position p of an order is `ingest.min_ts + p` seconds,
    so the order survives, equal positions tie, and every ordinal time lies inside ingest's range."""
    return cfg.min_ts + position


def raw_text(raw: Any) -> str:
    """Render a record's raw form for the quarantine, cut to RAW_CHARS."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="backslashreplace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = json.dumps(raw, ensure_ascii=True, default=str)
    return printable(text).rstrip("\r\n")[:RAW_CHARS]


CORRUPT_STREAM = (gzip.BadGzipFile, zlib.error, isal_zlib.error)  # not gzip, or damaged inside
STREAM_ERRORS = (EOFError, OSError, *CORRUPT_STREAM)  # what reading a truncated or corrupt stream raises


def stream_error(e: BaseException, line_no: int) -> str:
    """The quarantine reason of a stream that broke off while reading line `line_no`."""
    what = "corrupt gzip stream" if isinstance(e, CORRUPT_STREAM) else "file truncated"
    return f"{what} at line {line_no}: {e}"


def text_lines(stream: IO[bytes]) -> Iterator[tuple[int, str | None, str | None, bytes]]:
    """(line_no, text, error, raw) for each line; a truncated/corrupt stream ends with one error."""
    line_no = 0
    it = iter(stream)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except STREAM_ERRORS as e:  # truncated or corrupt compressed stream
            yield line_no + 1, None, stream_error(e, line_no + 1), b""
            return
        line_no += 1
        text, error = decode_line(line, line_no)
        yield line_no, text, error, line


def json_records(stream: IO[bytes], literal_fallback: bool = False) -> Iterator[Record]:
    """One Record per line of a JSON-lines stream.

    `literal_fallback` also accepts Python-literal dicts (Amazon 2014 metadata is written with
    Python's repr, e.g. `{'asin': '0001', 'categories': [['Books']]}`).
    """
    for line_no, text, error, raw in text_lines(stream):
        yield json_record(line_no, text, error, raw, literal_fallback)


def json_record(
    line_no: int, text: str | None, error: str | None, raw: bytes, literal_fallback: bool = False
) -> Record:
    """The Record of one decoded line (`text`, or the `error` that kept it from decoding)."""
    if text is None:
        return Record(line_no, None, error, raw)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        value = _literal(text) if literal_fallback else None
        if value is None:
            msg = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "nested too deep"
            what = "neither JSON nor a Python literal" if literal_fallback else "invalid JSON"
            return Record(line_no, None, f"{what}: {msg}", text)
    if not isinstance(value, dict):
        return Record(line_no, None, f"expected a JSON object, got {type(value).__name__}", text)
    return Record(line_no, value, None, text)


def _literal(text: str) -> dict[str, Any] | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) and all(isinstance(k, str) for k in value) else None


# --------------------------------------------------------------------------------------------
# Discovery helpers


def domain_for(raw_name: str, source: SourceConfig, where: Path) -> str | None:
    """The cprec domain of a raw dataset name (after `rename`), or None when filtered out."""
    domain = source.rename.get(raw_name, raw_name)
    if source.domains is not None and domain not in source.domains:
        return None
    try:
        return check_domain_name(domain)
    except ValueError as e:
        raise IngestError(
            f"{where}: {e}; map it to a valid name with ingest.sources[].rename "
            f"(e.g. {{{raw_name!r}: 'Games'}})"
        ) from None


def unique_files(found: dict[tuple[str, Table], list[Path]]) -> dict[tuple[str, Table], Path]:
    """One file per (domain, table); two candidates (e.g. X.jsonl and X.jsonl.gz) are an error."""
    out: dict[tuple[str, Table], Path] = {}
    for key, paths in sorted(found.items()):
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            raise IngestError(
                f"{paths[0].parent}: several {key[1]} files for domain {key[0]} ({names}): keep one"
            )
        out[key] = paths[0]
    return out


def discover_flat(
    source: SourceConfig,
    name_re: re.Pattern[str],
    records: Callable[[Path, FieldMap], Iterator[Record]],
    parsers: dict[Table, Callable[[dict[str, Any]], tuple[Any, ...]]],
    native: dict[Table, dict[str, str]],
    fast: dict[Table, Callable[[Path, FieldMap], Iterator[Record | pa.Table]]] | None = None,
) -> list[RawFile]:
    """Raw files directly under source.path whose names match `name_re`.

    The pattern's group `name` is the raw dataset name; a match of its group `meta` marks an
    item metadata file, anything else an interactions file. `records(path, fields)` reads a file
    in the reader's own field names (`native`: per table, canonical name -> own name); `fast(path,
    fields)`, where given for a table, reads it column-wise (ingest/columnar.py).
    """
    root = Path(source.path)
    if not root.is_dir():
        raise IngestError(f"ingest.sources[].path {root}: not a directory")
    found: dict[tuple[str, Table], list[Path]] = {}
    for path in sorted(root.iterdir()):
        m = name_re.match(path.name)
        if not path.is_file() or m is None:
            continue
        domain = domain_for(m["name"], source, path)
        if domain is not None:
            table: Table = "items" if m["meta"] else "interactions"
            found.setdefault((domain, table), []).append(path)
    files = []
    for (domain, table), path in unique_files(found).items():
        fields = FieldMap(native, table, source.fields, str(path))
        column_wise = (fast or {}).get(table)
        files.append(
            RawFile(
                path,
                table,
                domain,
                partial(records, path, fields),
                parsers[table],
                fields,
                partial(column_wise, path, fields) if column_wise else None,
            )
        )
    return files


# --------------------------------------------------------------------------------------------
# The per-file driver

_BRONZE_SCHEMA = {"interactions": INTERACTIONS_SCHEMA, "items": ITEMS_SCHEMA}


class _Batch:
    """Column lists that become one Arrow table of a fixed schema."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.cols: list[list[Any]] = [[] for _ in schema]

    def __len__(self) -> int:
        return len(self.cols[0])

    def add(self, row: tuple[Any, ...]) -> None:
        for col, value in zip(self.cols, row, strict=True):
            col.append(value)

    def take(self) -> pa.Table:
        table = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(self.cols, self.schema, strict=True)],
            schema=self.schema,
        )
        self.cols = [[] for _ in self.schema]
        return table


# Which parsed fields are ids and which are free text, per table (positions in a parser's row).
ID_FIELDS = {"interactions": {0: "user_id", 1: "item_id"}, "items": {0: "item_id"}}
TEXT_FIELDS = {"items": {1: "title", 3: "description", 4: "extra"}}


def check_sizes(table: Table, row: tuple[Any, ...], cfg: IngestConfig) -> None:
    """Raise RowError for an id over ingest.max_id_chars or a text field over ingest.max_text_chars."""
    for limits, cap, key in (
        (ID_FIELDS, cfg.max_id_chars, "max_id_chars"),
        (TEXT_FIELDS, cfg.max_text_chars, "max_text_chars"),
    ):
        for pos, name in limits.get(table, {}).items():
            value = row[pos]
            if isinstance(value, str) and len(value) > cap:
                raise RowError(f"field {name}: {len(value):,} characters, over ingest.{key}={cap:,}")
    if table == "items":
        longest = max((len(c) for c in row[2]), default=0)
        if longest > cfg.max_text_chars:
            raise RowError(f"field categories: a {longest:,}-character category, over ingest.max_text_chars")


def parse_checked(
    table: Table, parse: Callable[[dict[str, Any]], tuple[Any, ...]], cfg: IngestConfig, value: dict[str, Any]
) -> tuple[Any, ...]:
    """The bronze row of one record, as ingest_file keeps it: parsed, then its sizes checked."""
    row = parse(value)
    check_sizes(table, row, cfg)
    return row


def ingest_file(
    raw: RawFile,
    cfg: IngestConfig,
    write_rows: Callable[[pa.Table], None],
    write_bad: Callable[[pa.Table], None],
    advance: Callable[[int], None] | None = None,
) -> FileReport:
    """Read one raw file: valid rows to `write_rows`, rejected ones to `write_bad`, in batches.

    Memory is bounded by `cfg.batch_rows` rows of each kind. Returns the file's reconciliation.
    """
    source = printable(str(raw.path))
    report = FileReport(source, raw.table, raw.domain)
    rows = _Batch(_BRONZE_SCHEMA[raw.table])
    bad = _Batch(QUARANTINE_SCHEMA)

    def flush(batch: _Batch, write: Callable[[pa.Table], None]) -> int:
        n = len(batch)
        if n:
            write(batch.take())
            if advance is not None:
                advance(n)
        return n

    for rec in raw.fast() if raw.fast is not None else raw.records():
        if isinstance(rec, pa.Table):  # rows the column-wise reader vouches for (each has its source_line)
            report.kept += flush(rows, write_rows)
            n = rec.num_rows
            at = rows.schema.get_field_index("domain")
            write_rows(rec.add_column(at, "domain", pa.array([raw.domain] * n, pa.string())))
            report.rows_in += n
            report.kept += n
            if advance is not None:
                advance(n)
            continue
        report.rows_in += 1
        error = rec.error
        if error is None:
            try:
                row = parse_checked(raw.table, raw.parse, cfg, rec.value or {})
            except RowError as e:
                error = str(e)
            else:
                rows.add(
                    (*row, rec.line, raw.domain)
                    if raw.table == "interactions"
                    else (row[0], raw.domain, *row[1:])
                )
                if len(rows) >= cfg.batch_rows:
                    report.kept += flush(rows, write_rows)
                continue
        bad.add((source, rec.line, raw.table, raw.domain, printable(error), raw_text(rec.raw)))
        if len(bad) >= cfg.batch_rows:
            report.quarantined += flush(bad, write_bad)
    report.kept += flush(rows, write_rows)
    report.quarantined += flush(bad, write_bad)
    report.fields = dict(raw.fields.used) if raw.fields is not None else {}
    if report.rows_in != report.kept + report.quarantined:  # a reader/driver bug, never user input
        raise IngestError(
            f"{source}: rows_in {report.rows_in} != kept {report.kept} + quarantined {report.quarantined}"
        )
    return report
