"""Reader for the Amazon review data releases of 2014 and 2018 (McAuley Lab field names).

Reads: reviews `<Domain>.json[.gz]` or `reviews_<Domain>[_5].json[.gz]` (reviewerID, asin,
overall, unixReviewTime in seconds) and metadata `meta_<Domain>.json[.gz]` (asin, title,
categories: 2014 list of paths | category: 2018 list, description: str or list). 2014 metadata
is written as Python literals, not JSON; both are accepted.
Writes (through ingest/common.py): rows of BRONZE_INTERACTIONS and BRONZE_ITEMS; broken rows to
QUARANTINE. DESIGN.md data flow step 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest.columnar import JsonReviews
from cprec_core.ingest.common import (
    FieldMap,
    RawFile,
    Record,
    RowError,
    check_ts,
    discover_flat,
    extra_json,
    json_records,
    mapped,
    open_binary,
    opt_rating,
    opt_text,
    req_id,
    req_int,
    show,
    str_list,
)

# reviews_Books_5.json.gz, Books.json.gz, Office_Products_5.json → domain; the k-core suffix goes.
FILE = re.compile(r"^(?:(?P<meta>meta_)|reviews_)?(?P<name>.+?)(_\d+)?\.json(\.gz)?$")
RATING_BOUNDS = (1.0, 5.0)
# categories and description keep the 2014/2018 shapes their parser knows: never renamed onto
NATIVE = {
    "interactions": {
        "user": "reviewerID",
        "item": "asin",
        "timestamp": "unixReviewTime",
        "rating": "overall",
    },
    "items": {"item": "asin", "title": "title"},
}
ITEM_FIELDS = {"asin", "title", "categories", "category", "description"}


def parse_review(rec: dict[str, Any], cfg: IngestConfig) -> tuple[str, str, int, float | None]:
    """(user_id, item_id, ts seconds, rating) of one 2014/2018 review."""
    user = req_id(rec, "reviewerID")
    item = req_id(rec, "asin")
    seconds = req_int(rec, "unixReviewTime", "seconds")
    ts = check_ts(seconds, "unixReviewTime", seconds, "s", cfg)
    return user, item, ts, opt_rating(rec, "overall", RATING_BOUNDS)


def _categories(rec: dict[str, Any]) -> list[str]:
    """2014: `categories` is a list of paths (the first one is kept); 2018: `category` is one path."""
    cats = rec.get("categories")
    if cats is not None:
        if isinstance(cats, list) and cats and isinstance(cats[0], list):
            return str_list(cats[0], "categories")
        if isinstance(cats, list) and not cats:
            return []
        raise RowError(f"field categories: expected list of category paths, got {show(cats)}")
    return str_list(rec.get("category"), "category")


def parse_meta(rec: dict[str, Any]) -> tuple[str, str | None, list[str], str | None, str]:
    """(item_id, title, categories, description, extra) of one 2014/2018 metadata record."""
    item = req_id(rec, "asin")
    title = opt_text(rec, "title")
    desc = rec.get("description")
    if isinstance(desc, list):
        description = " ".join(d.strip() for d in str_list(desc, "description") if d.strip()) or None
    else:
        description = opt_text(rec, "description")
    return item, title, _categories(rec), description, extra_json(rec, ITEM_FIELDS)


REVIEWS = JsonReviews(NATIVE["interactions"], RATING_BOUNDS)  # timestamps in seconds


def records(path: Path, fields: FieldMap) -> Iterator[Record]:
    """One Record per line; Python-literal lines (2014 metadata) are accepted too."""
    with open_binary(path) as f:
        yield from mapped(json_records(f, literal_fallback=True), fields)


def discover(source: SourceConfig, cfg: IngestConfig) -> list[RawFile]:
    """Every review and metadata file directly under source.path."""
    return discover_flat(
        source,
        FILE,
        records,
        {"interactions": partial(parse_review, cfg=cfg), "items": parse_meta},
        NATIVE,
        fast={"interactions": partial(REVIEWS.read, cfg=cfg, literal_fallback=True)},
    )
