"""Reader for Amazon Reviews 2023 (McAuley Lab) JSON-lines files.

Reads: `<Domain>.jsonl[.gz]` reviews (user_id, parent_asin, rating, timestamp in ms) and
`meta_<Domain>.jsonl[.gz]` item metadata (parent_asin, title, main_category, categories,
description, features, store, price, ...).
Writes (through ingest/common.py): rows of BRONZE_INTERACTIONS and BRONZE_ITEMS; broken rows to
QUARANTINE. DESIGN.md data flow step 1; the raw text is what PAPER.md §1 renders.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest.columnar import JsonReviews, parsed_json_lines
from cprec_core.ingest.common import (
    FieldMap,
    RawFile,
    Record,
    check_ts,
    discover_flat,
    extra_json,
    json_records,
    mapped,
    open_binary,
    opt_rating,
    opt_text,
    parse_checked,
    req_id,
    req_int,
    str_list,
)
from cprec_core.schema import ITEMS_SCHEMA

FILE = re.compile(r"^(?P<meta>meta_)?(?P<name>.+?)\.jsonl(\.gz)?$")
RATING_BOUNDS = (1.0, 5.0)
NATIVE = {
    "interactions": {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp", "rating": "rating"},
    "items": {
        "item": "parent_asin",
        "title": "title",
        "categories": "categories",
        "description": "description",
    },
}
ITEM_FIELDS = {"parent_asin", "title", "categories", "description"}


def parse_review(rec: dict[str, Any], cfg: IngestConfig) -> tuple[str, str, int, float | None]:
    """(user_id, item_id, ts seconds, rating) of one review; timestamps are milliseconds."""
    user = req_id(rec, "user_id")
    item = req_id(rec, "parent_asin")
    ms = req_int(rec, "timestamp", "ms")
    ts = check_ts(ms // 1000, "timestamp", ms, "ms", cfg)
    return user, item, ts, opt_rating(rec, "rating", RATING_BOUNDS)


def parse_meta(rec: dict[str, Any]) -> tuple[str, str | None, list[str], str | None, str]:
    """(item_id, title, categories, description, extra) of one metadata record.

    categories: the path from general to leaf; when empty (common in 2023), [main_category].
    description: the list of paragraphs joined by a space. Every other field goes to `extra`.
    """
    item = req_id(rec, "parent_asin")
    title = opt_text(rec, "title")
    categories = str_list(rec.get("categories"), "categories")
    if not categories:
        main = opt_text(rec, "main_category")
        categories = [main] if main and main.strip() else []
    description = " ".join(d.strip() for d in str_list(rec.get("description"), "description") if d.strip())
    return item, title, categories, description or None, extra_json(rec, ITEM_FIELDS)


def records(path: Path, fields: FieldMap) -> Iterator[Record]:
    """One Record per line of a (gzipped) JSON-lines file."""
    with open_binary(path) as f:
        yield from mapped(json_records(f), fields)


REVIEWS = JsonReviews(NATIVE["interactions"], RATING_BOUNDS, per_second=1000)  # timestamps in ms


META_COLUMNS = pa.schema([f for f in ITEMS_SCHEMA if f.name != "domain"])  # parse_meta's row


def fast_meta(path: Path, fields: FieldMap, cfg: IngestConfig) -> Iterator[Record | pa.Table]:
    """A metadata file read a block at a time (ingest/columnar.py: its `extra` is exact JSON text,
    which only the per-row parse writes, so it is what reads each row)."""
    return parsed_json_lines(path, fields, partial(parse_checked, "items", parse_meta, cfg), META_COLUMNS)


def discover(source: SourceConfig, cfg: IngestConfig) -> list[RawFile]:
    """Every `<Domain>.jsonl[.gz]` and `meta_<Domain>.jsonl[.gz]` directly under source.path."""
    return discover_flat(
        source,
        FILE,
        records,
        {"interactions": partial(parse_review, cfg=cfg), "items": parse_meta},
        NATIVE,
        fast={"interactions": partial(REVIEWS.read, cfg=cfg), "items": partial(fast_meta, cfg=cfg)},
    )
