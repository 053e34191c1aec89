"""The ingest stage entry point: all sources → bronze + quarantine, reconciliation, failure, refresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cprec_core.artifacts import ArtifactError, read_manifest, read_table
from cprec_core.config import Config, IngestConfig, PathsConfig, SourceConfig
from cprec_core.ingest.common import IngestError
from cprec_core.ingest.run import run_ingest
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS, QUARANTINE


def _review(user: str, item: str, ms: int) -> str:
    return json.dumps({"user_id": user, "parent_asin": item, "rating": 4.0, "timestamp": ms})


def _write_raw(raw: Path, toys_extra: list[str] = ()) -> None:
    raw.mkdir(exist_ok=True)
    # Books: 3 good + 1 bad (string timestamp); Toys: 4 good (+ extras); one meta file per domain
    books = [_review("U1", "B1", 1_550_000_000_000), _review("U2", "B1", 1_550_000_001_000)]
    books += [
        _review("U1", "B2", 1_550_000_002_000),
        '{"user_id": "U3", "parent_asin": "B1", "timestamp": "x"}',
    ]
    toys = [_review(f"U{i}", "T1", 1_560_000_000_000 + i) for i in range(4)] + list(toys_extra)
    (raw / "Books.jsonl").write_text("\n".join(books) + "\n")
    (raw / "Toys.jsonl").write_text("\n".join(toys) + "\n")
    (raw / "meta_Books.jsonl").write_text(json.dumps({"parent_asin": "B1", "title": "Vintage Novel"}) + "\n")
    (raw / "meta_Toys.jsonl").write_text(json.dumps({"parent_asin": "T1", "title": "Neon Puzzle"}) + "\n")


def _cfg(tmp_path: Path, **ingest) -> Config:
    ingest.setdefault("max_bad_fraction", 0.3)
    source = SourceConfig(format="amazon2023", path=tmp_path / "raw")
    return Config(paths=PathsConfig(root=tmp_path / "run"), ingest=IngestConfig(sources=[source], **ingest))


def test_full_ingest_reconciles_and_is_deterministic(tmp_path: Path) -> None:
    _write_raw(tmp_path / "raw")
    cfg = _cfg(tmp_path)
    out = run_ingest(cfg)
    # rows in: Books 4 + Toys 4 + 2 meta lines = 10; one Books line is bad
    assert (out["rows_in"], out["kept"], out["quarantined"]) == (10, 9, 1)
    assert out["domains"] == {
        "Books": {"interactions": 3, "items": 1, "quarantined": 1},
        "Toys": {"interactions": 4, "items": 1, "quarantined": 0},
    }
    assert all(f["rows_in"] == f["kept"] + f["quarantined"] for f in out["files"])
    manifest = read_manifest(BRONZE_INTERACTIONS, cfg.root)
    assert manifest.extra["files"] == out["files"] and manifest.rows == 7
    assert read_table(BRONZE_ITEMS, cfg.root).num_rows == 2
    (q,) = read_table(QUARANTINE, cfg.root).to_pylist()
    assert (q["line"], q["domain"], q["reason"]) == (4, "Books", 'field timestamp: expected int ms, got "x"')
    # an unchanged rerun writes byte-identical data: same content fingerprints
    assert run_ingest(cfg, progress=True)["fingerprints"] == out["fingerprints"]


def test_too_many_bad_rows_keeps_quarantine_and_removes_bronze(tmp_path: Path) -> None:
    _write_raw(tmp_path / "raw")
    run_ingest(_cfg(tmp_path))  # a good earlier run: bronze exists
    cfg = _cfg(tmp_path, max_bad_fraction=0.2)
    # Books has 1 bad of 4 = 25% > 20%
    with pytest.raises(IngestError, match=r"Books.jsonl: 1 of 4 interactions rows \(25.0%\) quarantined"):
        run_ingest(cfg)
    assert read_table(QUARANTINE, cfg.root).num_rows == 1
    assert read_manifest(QUARANTINE, cfg.root).extra["failed"] is True
    for artifact in (BRONZE_INTERACTIONS, BRONZE_ITEMS):  # nothing stale a later stage could trust
        with pytest.raises(ArtifactError, match="rerun its stage"):
            read_manifest(artifact, cfg.root)


def test_incremental_domain_refresh_keeps_other_partitions(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write_raw(raw)
    cfg = _cfg(tmp_path)
    first = run_ingest(cfg)
    books_before = [
        r for r in read_table(BRONZE_INTERACTIONS, cfg.root).to_pylist() if r["domain"] == "Books"
    ]
    # new Toys logs arrive: 2 more events (one broken); Books is not read again
    _write_raw(raw, toys_extra=[_review("U9", "T1", 1_570_000_000_000), "{oops"])
    (raw / "Books.jsonl").write_text("this would fail if it were read\n")
    out = run_ingest(cfg, domains=["Toys"])
    assert out["refreshed"] == ["Toys"]
    assert out["domains"]["Books"] == first["domains"]["Books"]  # carried over, not re-read
    assert out["domains"]["Toys"] == {"interactions": 5, "items": 1, "quarantined": 1}
    inter = read_table(BRONZE_INTERACTIONS, cfg.root).to_pylist()
    assert [r for r in inter if r["domain"] == "Books"] == books_before  # the same 3 rows
    assert sum(r["domain"] == "Toys" for r in inter) == 5
    reasons = {(q["domain"], q["line"]) for q in read_table(QUARANTINE, cfg.root).to_pylist()}
    assert reasons == {("Books", 4), ("Toys", 6)}
    assert {f["domain"] for f in read_manifest(BRONZE_ITEMS, cfg.root).extra["files"]} == {"Books", "Toys"}


def test_refresh_refuses_bronze_made_under_other_rules(tmp_path: Path) -> None:
    _write_raw(tmp_path / "raw")
    run_ingest(_cfg(tmp_path))
    with pytest.raises(IngestError, match="run a full ingest"):
        run_ingest(_cfg(tmp_path, min_ts=0), domains=["Toys"])


def test_domain_argument_errors(tmp_path: Path) -> None:
    _write_raw(tmp_path / "raw")
    cfg = _cfg(tmp_path)
    with pytest.raises(IngestError, match="domain name 'no-such'"):
        run_ingest(cfg, domains=["no-such"])
    with pytest.raises(IngestError, match=r"domains \['Garden'\]: no file in ingest.sources provides them"):
        run_ingest(cfg, domains=["Garden"])
    with pytest.raises(IngestError, match="incremental ingest needs complete bronze artifacts"):
        run_ingest(cfg, domains=["Toys"])  # nothing ingested yet


def test_no_raw_files_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(IngestError, match=r"no raw files found in ingest.sources \[amazon2023:"):
        run_ingest(_cfg(tmp_path))


def test_refresh_refuses_bronze_of_an_older_schema(tmp_path: Path) -> None:
    import json

    _write_raw(tmp_path / "raw")
    cfg = _cfg(tmp_path)
    run_ingest(cfg)
    manifest_path = BRONZE_INTERACTIONS.path(cfg.root) / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema"] = manifest["schema"].replace("source_line: int64\n", "")  # as an older cprec wrote it
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IngestError, match="another schema .* run a full ingest"):
        run_ingest(cfg, domains=["Toys"])


def test_oversized_ids_and_text_are_quarantined_with_the_cap_named(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write_raw(raw, toys_extra=[_review("U" * 100_000, "T1", 1_560_000_000_010)])  # a 100 KB user id
    meta = [json.dumps({"parent_asin": "T1", "title": "Neon Puzzle"})]
    meta.append(json.dumps({"parent_asin": "T2", "title": "x" * 2_000_000}))  # a 2 MB title
    (raw / "meta_Toys.jsonl").write_text("\n".join(meta) + "\n")
    out = run_ingest(_cfg(tmp_path, max_bad_fraction=0.5))
    reasons = {
        (q["domain"], q["line"]): q["reason"] for q in read_table(QUARANTINE, out_root(tmp_path)).to_pylist()
    }
    assert reasons[("Toys", 5)] == "field user_id: 100,000 characters, over ingest.max_id_chars=512"
    assert reasons[("Toys", 2)] == "field title: 2,000,000 characters, over ingest.max_text_chars=65,536"
    assert out["domains"]["Toys"] == {"interactions": 4, "items": 1, "quarantined": 2}  # nothing else lost


def out_root(tmp_path: Path) -> Path:
    return tmp_path / "run"


def test_domains_run_in_any_order_commit_the_same_files_and_leave_no_staging(tmp_path: Path) -> None:
    from cprec_core.paths import scratch_dir

    _write_raw(tmp_path / "raw")
    artifacts = (BRONZE_INTERACTIONS, BRONZE_ITEMS, QUARANTINE)
    in_order = _cfg(tmp_path)
    first = run_ingest(in_order)
    given: list[str] = []

    def backwards(read, domains):  # as a task runner may finish them: last domain first
        given.extend(domains)
        return list(reversed([read(d) for d in reversed(domains)]))

    other = in_order.model_copy(update={"paths": PathsConfig(root=tmp_path / "other")})
    second = run_ingest(other, map_domains=backwards)
    raw_bytes = {d: sum(f.stat().st_size for f in (tmp_path / "raw").glob(f"*{d}*")) for d in given}
    assert sorted(given) == ["Books", "Toys"] and raw_bytes[given[0]] > raw_bytes[given[1]]  # largest first
    assert second["files"] == first["files"]  # reconciliation in the sources' order
    for a in artifacts:
        assert read_manifest(a, other.root).fingerprint == read_manifest(a, in_order.root).fingerprint
    assert sorted(read_manifest(QUARANTINE, in_order.root).files) == ["domain=Books/part-0.parquet"]
    assert not any(scratch_dir(in_order.root).iterdir())  # the staged partitions were moved or removed


def test_a_failing_domain_commits_nothing(tmp_path: Path) -> None:
    from cprec_core.paths import scratch_dir

    _write_raw(tmp_path / "raw")
    cfg = _cfg(tmp_path)
    run_ingest(cfg)
    before = {a.name: read_manifest(a, cfg.root).fingerprint for a in (BRONZE_INTERACTIONS, QUARANTINE)}

    def toys_breaks(read, domains):  # Books is staged, then the Toys task dies
        staged = []
        for d in domains:
            if d == "Toys":
                raise OSError("disk gone")
            staged.append(read(d))
        return staged

    with pytest.raises(OSError, match="disk gone"):
        run_ingest(cfg, map_domains=toys_breaks)
    assert {
        a.name: read_manifest(a, cfg.root).fingerprint for a in (BRONZE_INTERACTIONS, QUARANTINE)
    } == before
    assert not any(scratch_dir(cfg.root).iterdir())


def test_refresh_refuses_a_quarantine_of_one_unpartitioned_file(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from cprec_core.artifacts import atomic_dir, finish_manifest

    _write_raw(tmp_path / "raw")
    cfg = _cfg(tmp_path)
    run_ingest(cfg)
    rows = read_table(QUARANTINE, cfg.root)
    with atomic_dir(QUARANTINE.path(cfg.root)) as tmp:  # as cprec wrote it before the per-domain commit
        pq.write_table(rows, tmp / "part-0.parquet")
        finish_manifest(tmp, QUARANTINE.name, rows.num_rows, QUARANTINE.schema, "")
    with pytest.raises(IngestError, match="one unpartitioned file .* run a full ingest"):
        run_ingest(cfg, domains=["Toys"])
    assert run_ingest(cfg)["quarantined"] == 1  # a full ingest rewrites it per domain


def test_a_refresh_keeps_only_the_files_a_manifest_lists(tmp_path: Path) -> None:
    import shutil

    _write_raw(tmp_path / "raw")
    cfg = _cfg(tmp_path)
    run_ingest(cfg)
    books = BRONZE_INTERACTIONS.path(cfg.root) / "domain=Books"
    shutil.copy(books / "part-0.parquet", books / "part-9.parquet")  # a stray file, in no manifest
    out = run_ingest(cfg, domains=["Toys"])
    assert out["domains"]["Books"]["interactions"] == 3
    assert sorted(read_manifest(BRONZE_INTERACTIONS, cfg.root).files) == [
        "domain=Books/part-0.parquet",
        "domain=Toys/part-0.parquet",
    ]
    assert sum(r["domain"] == "Books" for r in read_table(BRONZE_INTERACTIONS, cfg.root).to_pylist()) == 3


def test_a_worker_that_staged_elsewhere_fails_the_ingest_in_one_line(tmp_path: Path) -> None:
    _write_raw(tmp_path / "raw")
    cfg = _cfg(tmp_path)

    def on_another_disk(read, domains):  # a Dask worker that does not mount the run root
        cfg_, _staging = read.args
        return [read.func(cfg_, tmp_path / "elsewhere", d) for d in domains]

    with pytest.raises(
        IngestError, match="domain (Books|Toys): nothing staged for bronze.interactions .* same path"
    ):
        run_ingest(cfg, map_domains=on_another_disk)
    with pytest.raises(ArtifactError):
        read_manifest(BRONZE_INTERACTIONS, cfg.root)  # nothing was published


def test_a_refresh_after_an_ingest_without_bad_rows(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write_raw(raw)
    books = (raw / "Books.jsonl").read_text().splitlines()
    (raw / "Books.jsonl").write_text("\n".join(books[:3]) + "\n")  # the bad row gone
    cfg = _cfg(tmp_path)
    assert run_ingest(cfg)["quarantined"] == 0  # the quarantine: one zero-row file, no partition
    _write_raw(raw, toys_extra=[_review("U9", "T1", 1_570_000_000_000), "{oops"])
    (raw / "Books.jsonl").write_text("\n".join(books[:3]) + "\n")
    out = run_ingest(cfg, domains=["Toys"])
    assert out["domains"]["Books"] == {"interactions": 3, "items": 1, "quarantined": 0}
    assert [q["domain"] for q in read_table(QUARANTINE, cfg.root).to_pylist()] == ["Toys"]
    assert sorted(read_manifest(QUARANTINE, cfg.root).files) == ["domain=Toys/part-0.parquet"]
