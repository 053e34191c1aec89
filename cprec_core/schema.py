"""The only list of cprec's artifacts: where each lives, its Arrow schema, grain and key.

Layers follow the medallion convention: bronze = validated raw rows, silver = cleaned joins and
sequences, gold = model-ready corpora. Writers check their tables against these schemas
(`Artifact.check`), so a final SQL select that drifts fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa


@dataclass(frozen=True)
class Artifact:
    """A Parquet dataset directory under the run root."""

    name: str
    relpath: str
    schema: pa.Schema
    grain: str
    key: tuple[str, ...]
    partition: str | None = None

    def path(self, root: Path) -> Path:
        return Path(root) / self.relpath

    def check(self, table: pa.Table) -> pa.Table:
        """Return `table` cast to this artifact's schema; raise naming the columns that differ."""
        want = self.schema.names
        got = table.column_names
        if got != want:
            missing = [c for c in want if c not in got]
            extra = [c for c in got if c not in want]
            raise ValueError(
                f"{self.name}: columns differ from cprec_core/schema.py "
                f"(missing {missing}, unexpected {extra}, order {got} vs {want})"
            )
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(f"{self.name}: cannot cast to its schema: {e}") from None


INTERACTIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),  # seconds since epoch, UTC
        ("rating", pa.float64()),  # nullable: implicit feedback has none
        ("source_line", pa.int64()),  # 1-based line (or row) in its raw file: the raw order, for time ties
        ("domain", pa.string()),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("domain", pa.string()),
        ("title", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("description", pa.string()),
        ("extra", pa.string()),  # JSON object of the remaining source fields
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("line", pa.int64()),  # 1-based line (or row) number in source_file
        ("table", pa.string()),  # interactions | items
        ("domain", pa.string()),
        ("reason", pa.string()),  # "field timestamp: expected int ms, got '2019-03-01'"
        ("raw", pa.string()),  # the offending row, cut to 2,000 characters
    ]
)

BRONZE_INTERACTIONS = Artifact(
    "bronze.interactions",
    "bronze/interactions",
    INTERACTIONS_SCHEMA,
    "one row per raw event that passed validation",
    ("domain", "user_id", "item_id", "ts"),
    partition="domain",
)
BRONZE_ITEMS = Artifact(
    "bronze.items",
    "bronze/items",
    ITEMS_SCHEMA,
    "one row per item record (last record of an item wins in silver)",
    ("domain", "item_id"),
    partition="domain",
)
QUARANTINE = Artifact(
    "quarantine",
    "quarantine",
    QUARANTINE_SCHEMA,
    "one row per rejected raw row",
    ("source_file", "line"),
    partition="domain",
)

SILVER_ITEMS = Artifact(
    "silver.items",
    "silver/items",
    pa.schema(
        [
            ("domain", pa.string()),
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("category", pa.string()),  # leaf category, nullable
        ]
    ),
    "one row per (domain, item) with usable text that survived k-core",
    ("domain", "item_id"),
)

# Every kept event with its leave-one-out split. position is 0-based within (user, domain).
SILVER_EVENTS = Artifact(
    "silver.events",
    "silver/events",
    pa.schema(
        [
            ("domain", pa.string()),
            ("user_id", pa.string()),
            ("position", pa.int32()),
            ("item_id", pa.string()),
            ("ts", pa.int64()),
            ("split", pa.string()),  # train | valid | test
        ]
    ),
    "one row per (domain, user, position): domain-specific chronological sequences",
    ("domain", "user_id", "position"),
    partition="domain",
)

# All-domain mixed sequences of train events only (users active in >= 2 domains).
SILVER_MIXED = Artifact(
    "silver.mixed",
    "silver/mixed",
    pa.schema(
        [
            ("user_id", pa.string()),
            ("position", pa.int32()),
            ("domain", pa.string()),
            ("item_id", pa.string()),
            ("ts", pa.int64()),
        ]
    ),
    "one row per (user, position) of the merged train events of the pretrain domains",
    ("user_id", "position"),
)

SILVER_STATS = Artifact(
    "silver.stats",
    "silver/stats",
    pa.schema(
        [
            ("domain", pa.string()),
            ("step", pa.string()),  # bronze | dedup | sample | text | kcore | sequences
            ("n_users", pa.int64()),
            ("n_items", pa.int64()),
            ("n_events", pa.int64()),
        ]
    ),
    "one row per (domain, step): counts after each cleaning step",
    ("domain", "step"),
)

CORPUS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("user_id", pa.string()),
        ("kind", pa.string()),  # domain | mixed
        ("domains", pa.list_(pa.string())),
        ("n_items", pa.int32()),
        ("text", pa.string()),
    ]
)

GOLD_CORPUS = Artifact(
    "gold.corpus",
    "gold/corpus",
    CORPUS_SCHEMA,
    "one row per (user, kind, window) document",
    ("doc_id",),
    partition="kind",
)

# Held-out documents whose last item is a valid event: the CPT perplexity probe (never trained on).
GOLD_PROBE = Artifact(
    "gold.probe",
    "gold/probe",
    CORPUS_SCHEMA,
    "one row per (user, domain) probe document ending at the valid event",
    ("doc_id",),
)

GOLD_PACKED = Artifact(
    "gold.packed",
    "gold/packed",
    pa.schema([("input_ids", pa.list_(pa.int32()))]),
    "one row per packed block of exactly pack.seq_len tokens",
    (),
)

# Downstream artifacts live inside a per-run directory, not at a fixed place under the run
# root: pass that directory as `root` (REC_RANKS: models/rec/<run>/<domain>/<variant>/seed=<s>/;
# REPORT_*: reports/<run>/).
REC_RANKS = Artifact(
    "rec.ranks",
    "ranks",
    pa.schema(
        [
            ("user_id", pa.string()),
            ("split", pa.string()),  # valid | test
            ("target_item_id", pa.string()),
            ("rank", pa.int64()),  # 0-based full-ranking rank, history excluded, ties pessimistic
            ("rank_unmasked", pa.int64()),  # the same with the history left in (RecBole's protocol)
        ]
    ),
    "one row per (user, split) of one (domain, variant, seed) run",
    ("user_id", "split"),
)

REPORT_METRICS = Artifact(
    "report.metrics",
    "metrics",
    pa.schema(
        [
            ("domain", pa.string()),
            ("variant", pa.string()),
            ("seed", pa.int64()),
            ("split", pa.string()),  # valid | test
            ("protocol", pa.string()),  # masked (history excluded: ours) | unmasked (RecBole's)
            ("metric", pa.string()),  # Recall@K | NDCG@K | MRR
            ("value", pa.float64()),
        ]
    ),
    "one row per (domain, variant, seed, split, protocol, metric), averaged over users",
    ("domain", "variant", "seed", "split", "protocol", "metric"),
)

REPORT_PER_USER = Artifact(
    "report.per_user",
    "per_user",
    pa.schema(
        [
            ("domain", pa.string()),
            ("variant", pa.string()),
            ("seed", pa.int64()),
            ("user_id", pa.string()),
            ("rank", pa.int64()),
            ("ndcg_at_10", pa.float64()),
            ("rank_unmasked", pa.int64()),
            ("ndcg_at_10_unmasked", pa.float64()),
        ]
    ),
    "one row per (domain, variant, seed, user) on the test split",
    ("domain", "variant", "seed", "user_id"),
)

# Lives inside a per-run directory: pass <root>/serving/<run> as `root`.
GOLD_RECOMMENDATIONS = Artifact(
    "gold.recommendations",
    "recommendations",
    pa.schema(
        [
            ("domain", pa.string()),
            ("user_id", pa.string()),
            ("rank", pa.int32()),  # 1 = best
            ("item_id", pa.string()),  # never an item of the user's history
            ("score", pa.float64()),
            ("variant", pa.string()),  # the fine-tuned variant that scored it
            ("model_fingerprint", pa.string()),  # artifacts.model_fingerprint of the served run
        ]
    ),
    "one row per (domain, user, rank)",
    ("domain", "user_id", "rank"),
    partition="domain",
)

ALL_ARTIFACTS = (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    QUARANTINE,
    SILVER_ITEMS,
    SILVER_EVENTS,
    SILVER_MIXED,
    SILVER_STATS,
    GOLD_CORPUS,
    GOLD_PROBE,
    GOLD_PACKED,
)
