"""Great Expectations suites for every cprec artifact, validated batch by batch.

GX's pandas engine holds a whole frame in memory (STACK-NOTES: 5 M rows ≈ 1.7 GB peak), so an
artifact is streamed from its verified Parquet files in batches of `batch_rows` rows and each
batch is validated against the same suite; counts are summed and samples kept from the first
batches that fail. List columns are validated through derived length columns.

Every expectation holds row by row or within a batch, so a file's result depends on its content
alone: with `remember`, the files that passed are recorded by content hash and suite under the
root's state/validated/, and a later validation checks only the files it has not seen pass (a
refresh's unchanged partitions, linked as they are, are not read again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cprec_core.artifacts import atomic_write_text, code_version, config_hash, read_manifest
from cprec_core.errors import UserError
from cprec_core.paths import state_dir
from cprec_core.schema import Artifact

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class ValidationFailed(UserError, RuntimeError):
    """An artifact broke one of its expectations; the message names it and shows sample rows."""


@dataclass
class Outcome:
    """The summed result of one expectation over all batches."""

    expectation: str
    kwargs: dict[str, Any]
    success: bool = True
    element_count: int = 0
    unexpected_count: int = 0
    sample_rows: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.expectation}({args}): {self.unexpected_count} of {self.element_count} rows unexpected"


@dataclass
class ValidationReport:
    """What validating one artifact found."""

    artifact: str
    rows: int
    batches: int
    outcomes: list[Outcome]
    rows_passed_before: int = 0  # rows in files whose content passed this suite before: not read again

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    def failure_message(self) -> str:
        """One line: the artifact, then each failed expectation with its sample rows."""
        failed = [f"{o.describe()} (sample rows: {o.sample_rows})" for o in self.outcomes if not o.success]
        return f"{self.artifact}: {len(failed)} expectation(s) failed: {'; '.join(failed)}"

    def to_markdown(self) -> str:
        head = f"### Validation of `{self.artifact}`: {'passed' if self.success else 'FAILED'}\n\n"
        head += f"{self.rows:,} rows in {self.batches} batch(es)"
        if self.rows_passed_before:
            head += f"; {self.rows_passed_before:,} rows in unchanged files passed this suite before"
        head += ".\n\n"
        rows = ["| expectation | result | unexpected / rows |", "|---|---|---|"]
        for o in self.outcomes:
            args = ", ".join(f"{k}={v}" for k, v in o.kwargs.items())
            status = "pass" if o.success else "**fail**"
            rows.append(
                f"| `{o.expectation}` ({args}) | {status} | {o.unexpected_count:,} / {o.element_count:,} |"
            )
        return head + "\n".join(rows) + "\n"


def _expectations(artifact: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The suite of each artifact as (GX expectation class name, kwargs)."""
    not_null = "ExpectColumnValuesToNotBeNull"
    between = "ExpectColumnValuesToBeBetween"
    in_set = "ExpectColumnValuesToBeInSet"
    corpus = [
        (not_null, {"column": "text"}),
        (
            between,
            {"column": "text_chars", "min_value": 20, "max_value": params.get("max_doc_chars", 200_000)},
        ),
        (in_set, {"column": "kind", "value_set": ["domain", "mixed"]}),
        (between, {"column": "n_items", "min_value": 1, "max_value": params.get("max_items", 10_000)}),
        ("ExpectColumnValuesToBeUnique", {"column": "doc_id"}),
    ]
    suites: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "bronze.interactions": [
            *[(not_null, {"column": c}) for c in ("user_id", "item_id", "ts", "source_line", "domain")],
            (between, {"column": "ts", "min_value": params.get("min_ts"), "max_value": params.get("max_ts")}),
            (between, {"column": "source_line", "min_value": 1}),
            (between, {"column": "rating", "min_value": 0, "max_value": 5}),
            ("ExpectColumnValuesToMatchRegex", {"column": "domain", "regex": r"^[A-Za-z][A-Za-z0-9_]*$"}),
        ],
        "bronze.items": [(not_null, {"column": c}) for c in ("item_id", "domain")],
        "silver.items": [
            *[(not_null, {"column": c}) for c in ("domain", "item_id", "title")],
            (between, {"column": "title_chars", "min_value": params.get("min_title_chars", 1)}),
        ],
        "silver.events": [
            *[(not_null, {"column": c}) for c in ("domain", "user_id", "item_id", "ts", "position")],
            (in_set, {"column": "split", "value_set": ["train", "valid", "test"]}),
            (between, {"column": "position", "min_value": 0}),
        ],
        "silver.mixed": [
            *[(not_null, {"column": c}) for c in ("user_id", "domain", "item_id", "ts")],
            (between, {"column": "position", "min_value": 0}),
        ],
        "gold.recommendations": [
            *[(not_null, {"column": c}) for c in ("domain", "user_id", "item_id", "score", "variant")],
            (between, {"column": "rank", "min_value": 1, "max_value": params.get("top_k")}),
            ("ExpectCompoundColumnsToBeUnique", {"column_list": ["domain", "user_id", "rank"]}),
            ("ExpectCompoundColumnsToBeUnique", {"column_list": ["domain", "user_id", "item_id"]}),
        ],
        "gold.corpus": corpus,
        "gold.probe": corpus,
        "gold.packed": [
            (
                between,
                {
                    "column": "n_tokens",
                    "min_value": params.get("seq_len"),
                    "max_value": params.get("seq_len"),
                },
            )
        ],
    }
    if artifact not in suites:
        raise KeyError(f"no GX suite for artifact {artifact!r}; suites are defined in cprec_core/validate.py")
    return [(name, {k: v for k, v in kw.items() if v is not None}) for name, kw in suites[artifact]]


SHOWN_CHARS = 120  # a document's text as GX sees it (and a failure's sample row shows it)


def _derived(batch: pa.Table) -> pd.DataFrame:
    """The frame a suite reads: the length columns that text expectations read added, a document's
    text cut to its first SHOWN_CHARS characters (its length, and whether it is null, are kept:
    pandas need not hold whole documents),
    narrower integers widened to 64 bits (GX checks a range on int64/float64 columns as one array
    operation, on any other dtype one Python call per value: 3 of 6 s for 5 M events)."""
    names = batch.schema.names
    if "text" in names:
        text = batch.column("text")
        batch = batch.set_column(names.index("text"), "text", pc.utf8_slice_codeunits(text, 0, SHOWN_CHARS))
        batch = batch.append_column("text_chars", pc.utf8_length(text))
    for i, column in enumerate(batch.schema):
        if pa.types.is_integer(column.type) and column.type.bit_width < 64:
            batch = batch.set_column(i, column.name, pc.cast(batch.column(i), pa.int64()))
    df = batch.to_pandas()
    if "title" in df and "item_id" in df and "kind" not in df:
        df["title_chars"] = df["title"].str.len()
    return df


DERIVED_FROM = {"text_chars": "text", "title_chars": "title", "n_tokens": "input_ids"}


def _read_columns(artifact: Artifact, expectations: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The columns a suite reads (derived ones by their source) and the artifact's key, which names
    a failure's sample rows: every column read becomes a pandas column, so the others stay unread."""
    used = {c for _, kw in expectations for c in [kw.get("column"), *kw.get("column_list", [])] if c}
    wanted = {DERIVED_FROM.get(c, c) for c in used} | set(artifact.key)
    return [c for c in artifact.schema.names if c in wanted]


def _batches(files: list[Path], batch_rows: int, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The files' rows as frames of `batch_rows` rows (the last one shorter), read across file
    boundaries: GX spends ~0.1 s on a frame whatever its size, so seven domain partitions of 140 k
    rows are one frame, not seven."""
    pending: list[pa.RecordBatch] = []
    n = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns):
            while batch.num_rows:
                take = batch.slice(0, batch_rows - n)
                pending.append(take)
                n += take.num_rows
                batch = batch.slice(take.num_rows)
                if n == batch_rows:
                    yield _frame(_joined(pending))
                    pending, n = [], 0
    if pending:
        yield _frame(_joined(pending))


def _joined(batches: list[pa.RecordBatch]) -> pa.Table:
    """Batches of several files as one table; a file written under an older schema (a partition a
    refresh kept) may differ in string width or nullability, which is promoted, not refused."""
    return pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")


def _frame(rows: pa.Table) -> pd.DataFrame:
    """The frame a suite validates: packed token blocks as their lengths, anything else `_derived`."""
    if "input_ids" in rows.schema.names:
        lengths = pc.list_value_length(rows.column("input_ids"))
        return pd.DataFrame({"n_tokens": lengths.to_numpy(zero_copy_only=False)})
    return _derived(rows)


@lru_cache(maxsize=1)
def _gx():
    import great_expectations as gx  # imported lazily: ~6 s
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every pandas frame it validates (an MD5 over pd.util.hash_pandas_object, ~30 %
    # of validating 1 M bronze rows) only to label the batch in its results, and skips that above
    # HASH_THRESHOLD bytes. cprec's batches are named by their files' content hashes already, so
    # the threshold is 0 (test_validate.py fails if a GX release stops reading it)
    pandas_execution_engine.HASH_THRESHOLD = 0
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch_definition = (
        ctx.data_sources.add_pandas("cprec")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("all")
    )
    return gx, ctx, batch_definition


def _suite(artifact: str, params: dict[str, Any]):
    gx, ctx, _ = _gx()
    name = f"{artifact}:{sorted(params.items())}"
    try:
        return ctx.suites.get(name)
    except Exception:  # GX raises its own not-found error type
        suite = gx.ExpectationSuite(name=name)
        for cls, kwargs in _expectations(artifact, params):
            suite.add_expectation(getattr(gx.expectations, cls)(**kwargs))
        return ctx.suites.add(suite)


def _sample(df: pd.DataFrame, column: str, unexpected: list[Any], n: int = 3) -> list[dict[str, Any]]:
    values = [v for v in unexpected if not pd.isna(v)]
    mask = df[column].isin(values) if values else df[column].isna()
    shown = [c for c in df.columns if c != "text"] + (["text"] if "text" in df.columns else [])
    rows = df.loc[mask, shown].head(n).to_dict("records")
    return [{k: (v[:SHOWN_CHARS] if isinstance(v, str) else v) for k, v in r.items()} for r in rows]


def _record_path(artifact: Artifact, root: Path) -> Path:
    return state_dir(root) / "validated" / f"{artifact.name}.json"


def validate_artifact(
    artifact: Artifact,
    root: Path,
    params: dict[str, Any] | None = None,
    batch_rows: int = 1_000_000,
    raise_on_failure: bool = True,
    remember: bool = False,
) -> ValidationReport:
    """Validate an artifact's rows with its GX suite, streaming batches of `batch_rows` rows.

    `params` carries the config values a suite needs (min_ts/max_ts, seq_len, max_items,
    min_title_chars). Raises ValidationFailed naming each failed expectation with sample rows.
    With `remember`, files that passed this suite before (same content hash, same suite and code)
    are not read again, and the files of a passing artifact are recorded.
    """
    params = params or {}
    expectations = _expectations(artifact.name, params)
    outcomes = [Outcome(cls, kwargs) for cls, kwargs in expectations]
    manifest = read_manifest(artifact, root)
    files = {rel: meta["sha256"] for rel, meta in manifest.files.items() if rel.endswith(".parquet")}
    suite_key = config_hash(expectations, code_version())
    record = _record_path(artifact, root)
    seen: set[str] = set()
    if remember and record.is_file():
        try:
            stored = json.loads(record.read_text())
        except ValueError:  # unreadable: trust nothing, validate everything, write it anew
            stored = {}
        seen = set(stored.get("passed", [])) if stored.get("suite") == suite_key else set()
    directory = artifact.path(root)
    unseen = [directory / rel for rel, sha in sorted(files.items()) if sha not in seen]
    passed_before = sum(
        pq.ParquetFile(directory / rel).metadata.num_rows for rel, sha in files.items() if sha in seen
    )
    _, _, batch_definition = _gx()
    suite = _suite(artifact.name, params)
    rows = n_batches = 0
    for df in _batches(unseen, batch_rows, _read_columns(artifact, expectations)):
        rows += len(df)
        n_batches += 1
        result = batch_definition.get_batch(batch_parameters={"dataframe": df}).validate(suite)
        by_id = {res.expectation_config.id: res for res in result.results}  # GX reorders results
        for outcome, expectation in zip(outcomes, suite.expectations, strict=True):
            res = by_id[expectation.id]
            outcome.element_count += int(res.result.get("element_count", len(df)) or 0)
            outcome.unexpected_count += int(res.result.get("unexpected_count", 0) or 0)
            if not res.success:
                outcome.success = False
                if not outcome.sample_rows and "column" in outcome.kwargs:
                    partial = res.result.get("partial_unexpected_list", [])
                    outcome.sample_rows = _sample(df, outcome.kwargs["column"], partial)
    report = ValidationReport(artifact.name, rows, n_batches, outcomes, passed_before)
    if remember and report.success:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps({"suite": suite_key, "passed": sorted(set(files.values()))}))
    if raise_on_failure and not report.success:
        raise ValidationFailed(report.failure_message())
    return report
