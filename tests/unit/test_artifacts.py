"""Atomic artifact writes and manifest verification."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from cprec_core.artifacts import (
    ArtifactError,
    DatasetWriter,
    identity,
    model_fingerprint,
    read_table,
    verify,
    write_table,
)
from cprec_core.schema import BRONZE_INTERACTIONS


def _events(n: int, domain: str = "Books") -> pa.Table:
    return pa.table(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "item_id": [f"i{i % 3}" for i in range(n)],
            "ts": list(range(n)),
            "rating": [None] * n,
            "source_line": list(range(1, n + 1)),
            "domain": [domain] * n,
        }
    )


def test_roundtrip_with_partitions_and_manifest(tmp_path: Path) -> None:
    with DatasetWriter(BRONZE_INTERACTIONS, tmp_path) as w:
        w.write(_events(4, "Books"))
        w.write(_events(2, "Toys"))
    m = verify(BRONZE_INTERACTIONS.path(tmp_path), deep=True)
    assert m.rows == 6
    assert sorted(m.files) == ["domain=Books/part-0.parquet", "domain=Toys/part-0.parquet"]
    assert read_table(BRONZE_INTERACTIONS, tmp_path).num_rows == 6


def test_failed_write_leaves_previous_artifact_intact(tmp_path: Path) -> None:
    write_table(BRONZE_INTERACTIONS, tmp_path, _events(3))
    before = verify(BRONZE_INTERACTIONS.path(tmp_path)).fingerprint
    with pytest.raises(RuntimeError), DatasetWriter(BRONZE_INTERACTIONS, tmp_path) as w:
        w.write(_events(5))
        raise RuntimeError("crash mid-write")
    assert verify(BRONZE_INTERACTIONS.path(tmp_path)).fingerprint == before
    leftovers = [
        p.name for p in BRONZE_INTERACTIONS.path(tmp_path).parent.iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []


def test_schema_drift_is_refused(tmp_path: Path) -> None:
    bad = _events(2).rename_columns(["user", "item_id", "ts", "rating", "source_line", "domain"])
    with pytest.raises(ValueError, match=r"missing \['user_id'\], unexpected \['user'\]"):
        write_table(BRONZE_INTERACTIONS, tmp_path, bad)


def test_truncated_file_detected(tmp_path: Path) -> None:
    write_table(BRONZE_INTERACTIONS, tmp_path, _events(3))
    part = BRONZE_INTERACTIONS.path(tmp_path) / "domain=Books" / "part-0.parquet"
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="size"):
        read_table(BRONZE_INTERACTIONS, tmp_path)


def test_missing_manifest_means_incomplete(tmp_path: Path) -> None:
    (tmp_path / "bronze" / "interactions").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="missing or incomplete"):
        read_table(BRONZE_INTERACTIONS, tmp_path)


def test_model_fingerprint_follows_the_weights_not_their_timestamps(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights-1")
    first = model_fingerprint(model)
    (model / "model.safetensors").write_bytes(b"weights-1")  # rewritten, same bytes: same identity
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert model_fingerprint(model) == first
    (model / "model.safetensors").write_bytes(b"weights-2")
    second = model_fingerprint(model)
    assert second != first
    (model / "tokenizer.json").write_text("{}")  # the tokenizer is part of a model too
    assert model_fingerprint(model) != second
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    assert len(model_fingerprint(gguf)) == 64
    (model / "config.json").unlink()
    with pytest.raises(ArtifactError, match="not a model"):
        model_fingerprint(model)


def test_identity_follows_config_inputs_and_code_version() -> None:
    config, inputs = {"a": 1, "b": [1, 2]}, {"events": "f1", "llm": "f2"}
    key = identity(config, inputs)
    assert key == identity({"b": [1, 2], "a": 1}, dict(reversed(inputs.items())))  # order does not matter
    assert len(key) == 16 and key == identity(config, inputs)
    assert identity({"a": 2, "b": [1, 2]}, inputs) != key
    assert identity(config, {"events": "f1", "llm": "f3"}) != key
    assert identity(config, inputs, code=False) != key  # the code version is part of it unless asked not
    assert identity({**config, "events": "f1"}, {"llm": "f2"}) != identity(config, inputs)


def test_the_sweep_removes_what_a_killed_writer_left_and_not_an_empty_spill_parent(tmp_path: Path) -> None:
    from cprec_core.locks import sweep_leftovers
    from cprec_core.paths import scratch_dir

    spill_parent = scratch_dir(tmp_path) / "duckdb"  # made by every behaviors run, empty after it
    spill_parent.mkdir(parents=True)
    staged = scratch_dir(tmp_path) / "ingest-1a2b3c4d"  # a killed ingest's staging
    (staged / "domain=Toys").mkdir(parents=True)
    half = tmp_path / "bronze" / ".interactions.tmp-5e6f"  # a killed artifact write
    half.mkdir(parents=True)
    assert sorted(p.name for p in sweep_leftovers(tmp_path)) == [".interactions.tmp-5e6f", "ingest-1a2b3c4d"]
    assert spill_parent.is_dir() and not staged.exists() and not half.exists()
    assert sweep_leftovers(tmp_path) == []  # nothing to report on the next run


def test_an_adopted_partition_is_never_written_into(tmp_path: Path) -> None:
    from cprec_core.artifacts import DatasetWriter, partition_files, read_manifest

    write_table(BRONZE_INTERACTIONS, tmp_path / "old", _events(4))
    old = read_manifest(BRONZE_INTERACTIONS, tmp_path / "old")
    parts = partition_files(old, BRONZE_INTERACTIONS.path(tmp_path / "old"), "domain")
    before = {rel: p.read_bytes() for files in parts.values() for rel, p in files.items()}
    with pytest.raises(ValueError, match="written twice"), DatasetWriter(BRONZE_INTERACTIONS, tmp_path) as w:
        for files in parts.values():
            w.adopt(files)
        w.write(_events(4))  # rows of the adopted partitions: would truncate the linked live files
    assert {rel: p.read_bytes() for files in parts.values() for rel, p in files.items()} == before
    with DatasetWriter(BRONZE_INTERACTIONS, tmp_path) as w:
        for files in parts.values():
            w.adopt(files)
    assert w.manifest is not None and w.manifest.fingerprint == old.fingerprint and w.rows == old.rows
