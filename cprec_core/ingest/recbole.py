"""Reader for RecBole atomic files.

Reads: `<dataset>.inter` with a typed, tab-separated header, either one event per line
(`user_id:token item_id:token timestamp:float rating:float`) or the sequence form
(`user_id:token item_id_list:token_seq item_id:token`, the history then the target), and
`<dataset>.item` (`item_id:token title:token_seq categories:token_seq ...`).
Writes (through ingest/common.py): rows of BRONZE_INTERACTIONS and BRONZE_ITEMS; broken rows to
QUARANTINE. DESIGN.md data flow step 1. Domain = dataset name (or `rename`).

Files without time (the sequence form, or no timestamp column) get ordinal timestamps
(`common.ordinal_ts`), the position counted within the line (sequence form) or over the file's
data rows. In the sequence form one source row is one expanded event.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest.common import (
    FieldMap,
    IngestError,
    RawFile,
    Record,
    RowError,
    check_ts,
    discover_flat,
    extra_json,
    opt_rating,
    opt_text,
    ordinal_ts,
    req_id,
    req_int,
    show,
    text_lines,
)

FILE = re.compile(r"^(?P<name>[^.]+)\.(?:inter|(?P<meta>item))$")
ITEM_FIELDS = {"item_id", "title", "text", "categories", "description"}
NATIVE = {
    "interactions": {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"},
    "items": {"item": "item_id", "title": "title", "categories": "categories", "description": "description"},
}


def _header(path: Path, text: str | None) -> list[tuple[str, str]]:
    fields = [f.split(":", 1) for f in (text or "").split("\t")]
    if not fields or any(len(f) != 2 or not f[0] for f in fields):
        raise IngestError(
            f"{path} line 1: expected a RecBole header of name:type fields separated by tabs, got {text!r}"
        )
    return [(name, kind) for name, kind in fields]


def _number(text: str) -> Any:
    """A float field: '' → None, a number → float, anything else stays text (the parser rejects it)."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def records(path: Path, fields: FieldMap, cfg: IngestConfig) -> Iterator[Record]:
    """One Record per data line (per event in the sequence form), in this reader's field names."""
    with open(path, "rb") as f:
        lines = text_lines(f)
        first = next(lines, None)
        header = _header(path, first[1] if first else None)
        header = list(zip(fields.rename_names([n for n, _ in header]), [k for _, k in header], strict=True))
        names = [n for n, _ in header]
        floats = {n for n, kind in header if kind == "float"}
        ordinal = "user_id" in names and "timestamp" not in names  # events without time
        for row_no, (line_no, text, error, raw) in enumerate(lines):
            if text is None:
                yield Record(line_no, None, error, raw)
                continue
            values = text.split("\t")
            if len(values) != len(names):
                yield Record(
                    line_no, None, f"expected {len(names)} tab-separated fields, got {len(values)}", text
                )
                continue
            rec = {n: (_number(v) if n in floats else v) for n, v in zip(names, values, strict=True)}
            if "item_id_list" in rec:
                items = rec.pop("item_id_list").split()
                if "item_id" in rec:  # the target comes after the history
                    items.append(rec.pop("item_id"))
                for pos, item in enumerate(items):
                    yield Record(
                        line_no, {**rec, "item_id": item, "timestamp": ordinal_ts(pos, cfg)}, None, text
                    )
                continue
            if ordinal:
                rec["timestamp"] = ordinal_ts(row_no, cfg)
            elif isinstance(rec.get("timestamp"), float) and math.isfinite(rec["timestamp"]):
                rec["timestamp"] = math.floor(rec["timestamp"])
            yield Record(line_no, rec, None, text)


def parse_inter(rec: dict[str, Any], cfg: IngestConfig) -> tuple[str, str, int, float | None]:
    """(user_id, item_id, ts seconds, rating) of one event."""
    user = req_id(rec, "user_id")
    item = req_id(rec, "item_id")
    seconds = req_int(rec, "timestamp", "seconds")
    return user, item, check_ts(seconds, "timestamp", seconds, "s", cfg), opt_rating(rec, "rating")


def _categories(value: str | None) -> list[str]:
    """`'Books', 'Fiction'` (quoted list) or `Books > Fiction` (path) or one category."""
    if not value or not value.strip():
        return []
    if value.lstrip()[:1] in "'\"":
        try:
            parsed = ast.literal_eval(f"[{value}]")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise RowError(f"field categories: unreadable quoted list {show(value)}") from None
        flat = [c for p in parsed for c in (p if isinstance(p, list | tuple) else [p])]
        return [str(c).strip() for c in flat if str(c).strip()]
    return [c.strip() for c in value.split(" > ") if c.strip()]


def parse_item(rec: dict[str, Any]) -> tuple[str, str | None, list[str], str | None, str]:
    """(item_id, title, categories, description, extra); `text` serves as title when absent."""
    item = req_id(rec, "item_id")
    title = opt_text(rec, "title") if "title" in rec else opt_text(rec, "text")
    categories = _categories(opt_text(rec, "categories"))
    return item, title, categories, opt_text(rec, "description"), extra_json(rec, ITEM_FIELDS)


def discover(source: SourceConfig, cfg: IngestConfig) -> list[RawFile]:
    """Every `<dataset>.inter` and `<dataset>.item` directly under source.path."""
    return discover_flat(
        source,
        FILE,
        partial(records, cfg=cfg),
        {"interactions": partial(parse_inter, cfg=cfg), "items": parse_item},
        NATIVE,
    )
