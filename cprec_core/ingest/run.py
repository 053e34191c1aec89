"""The ingest stage: every configured raw source → bronze Parquet + quarantine.

Reads: the raw files of `ingest.sources` (formats: amazon2023, amazon2014, recbole, generic).
Writes: BRONZE_INTERACTIONS and BRONZE_ITEMS (partitioned by domain) and QUARANTINE, each
atomically with a manifest whose `extra` holds the per-file reconciliation
(rows_in == kept + quarantined). DESIGN.md data flow step 1; PAPER.md §2 (the behaviour logs of
all domains that CPT later reads).

When a file's quarantined share exceeds `ingest.max_bad_fraction`, the quarantine is still
written (so the user can read why), and then the bronze artifacts are REMOVED and `IngestError`
names the worst file. Keeping the previous bronze would let a later `behaviors` run, keyed on the
bronze fingerprint, take data that no longer matches the raw logs for fresh; with bronze gone it
fails loudly ("no _manifest.json ... rerun its stage") until ingest succeeds. Any other error
(a bad layout, a missing column, an unreadable Parquet file) writes nothing: every artifact stays
as the last successful ingest left it, bronze and quarantine still consistent with each other.

Incremental refresh (`domains=[...]`): only those domains are read again; the other domains'
bronze partitions, quarantine rows and reconciliation entries are copied from the current
artifacts into the new ones, which replace the old atomically.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import Progress

from cprec_core.artifacts import ArtifactError, DatasetWriter, config_hash, parquet_files, read_manifest
from cprec_core.config import Config, IngestConfig, SourceConfig, check_domain_name
from cprec_core.ingest import amazon2014, amazon2023, generic, recbole
from cprec_core.ingest.common import FileReport, IngestError, RawFile, ingest_file
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS, QUARANTINE, Artifact

READERS: dict[str, Callable[[SourceConfig, IngestConfig], list[RawFile]]] = {
    "amazon2023": amazon2023.discover,
    "amazon2014": amazon2014.discover,
    "recbole": recbole.discover,
    "generic": generic.discover,
}


def validity(cfg: IngestConfig) -> dict[str, int]:
    """The settings that decide which rows are valid: partitions kept by a refresh must share them."""
    return {"min_ts": cfg.min_ts, "max_ts": cfg.max_ts}


def discover_all(cfg: IngestConfig, domains: list[str] | None = None) -> list[RawFile]:
    """Raw files of every source, restricted to `domains` when given."""
    files = [f for s in cfg.sources for f in READERS[s.format](s, cfg)]
    if domains is not None:
        files = [f for f in files if f.domain in domains]
        missing = sorted(set(domains) - {f.domain for f in files})
        if missing:
            raise IngestError(f"domains {missing}: no file in ingest.sources provides them")
    if not files:
        paths = ", ".join(f"{s.format}:{s.path}" for s in cfg.sources) or "(none)"
        raise IngestError(
            f"no raw files found in ingest.sources [{paths}] (see cprec_core/ingest/*.py for names)"
        )
    return files


def _keep_old(artifact: Artifact, root: Path, drop: set[str], writer: DatasetWriter, batch_rows: int) -> None:
    """Copy the rows of `artifact` whose domain is not in `drop` into `writer`."""
    for f in parquet_files(artifact, root):
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=batch_rows):
            keep = pc.invert(pc.is_in(batch.column("domain"), value_set=pa.array(sorted(drop), pa.string())))
            writer.write(batch.filter(keep))


def _previous(root: Path, refreshed: set[str], cfg: IngestConfig) -> list[dict[str, Any]]:
    """Reconciliation entries of the domains a refresh keeps; checks the bronze is compatible."""
    try:
        manifest = read_manifest(BRONZE_INTERACTIONS, root)
        read_manifest(BRONZE_ITEMS, root)
        read_manifest(QUARANTINE, root)
    except ArtifactError as e:
        raise IngestError(
            f"incremental ingest needs complete bronze artifacts: {e}; run a full ingest"
        ) from None
    if manifest.extra.get("validity") != validity(cfg):
        raise IngestError(
            f"bronze was ingested with {manifest.extra.get('validity')}, now {validity(cfg)}: "
            "run a full ingest (domains=None) so every domain follows the same rules"
        )
    return [r for r in manifest.extra.get("files", []) if r["domain"] not in refreshed]


def _summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    per_domain: dict[str, dict[str, int]] = {}
    for r in reports:
        d = per_domain.setdefault(r["domain"], {"interactions": 0, "items": 0, "quarantined": 0})
        d[r["table"]] += r["kept"]
        d["quarantined"] += r["quarantined"]
    return {
        "domains": dict(sorted(per_domain.items())),
        "rows_in": sum(r["rows_in"] for r in reports),
        "kept": sum(r["kept"] for r in reports),
        "quarantined": sum(r["quarantined"] for r in reports),
        "files": reports,
    }


def _remove(directory: Path) -> None:
    """Delete an artifact directory: renamed aside first, so it is never seen half-deleted."""
    if directory.exists():
        trash = directory.with_name(f".{directory.name}.rejected-{uuid.uuid4().hex[:8]}")
        directory.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def _too_bad(reports: list[FileReport], limit: float) -> FileReport | None:
    over = [r for r in reports if r.bad_fraction > limit]
    return max(over, key=lambda r: (r.bad_fraction, r.quarantined)) if over else None


def run_ingest(cfg: Config, progress: bool = False, domains: list[str] | None = None) -> dict[str, Any]:
    """Ingest every source of `cfg.ingest` (or only `domains`) into bronze + quarantine under cfg.root.

    Returns {"domains": {d: {interactions, items, quarantined}}, "rows_in", "kept", "quarantined",
    "files": [per-file reconciliation], "refreshed": [domains read now], "fingerprints":
    {artifact name: content fingerprint}}. Raises IngestError (see the module docstring).
    """
    icfg, root = cfg.ingest, cfg.root
    if domains is not None:
        try:
            domains = [check_domain_name(d) for d in domains]
        except ValueError as e:
            raise IngestError(str(e)) from None
    files = discover_all(icfg, domains)
    refreshed = sorted({f.domain for f in files})
    kept_old = _previous(root, set(refreshed), icfg) if domains is not None else []
    chash = config_hash(icfg)

    reports: list[FileReport] = []
    failure: FileReport | None = None
    quarantine = DatasetWriter(QUARANTINE, root, chash)
    with quarantine, Progress(disable=not progress, transient=True) as bar:
        try:
            with (
                DatasetWriter(BRONZE_INTERACTIONS, root, chash) as inter,
                DatasetWriter(BRONZE_ITEMS, root, chash) as items,
            ):
                writers = {"interactions": inter, "items": items}
                if domains is not None:
                    for artifact, w in (
                        (BRONZE_INTERACTIONS, inter),
                        (BRONZE_ITEMS, items),
                        (QUARANTINE, quarantine),
                    ):
                        _keep_old(artifact, root, set(refreshed), w, icfg.batch_rows)
                for f in files:
                    task = bar.add_task(f"ingest {f.path.name}", total=None)
                    advance = partial(bar.advance, task)
                    reports.append(ingest_file(f, icfg, writers[f.table].write, quarantine.write, advance))
                    bar.remove_task(task)
                summary = _summary([*kept_old, *(asdict(r) for r in reports)])
                failure = _too_bad(reports, icfg.max_bad_fraction)
                if failure is not None:
                    raise _Rejected  # discards the new bronze; the quarantine is still written below
                for w in (inter, items):
                    w.extra.update(files=summary["files"], validity=validity(icfg))
        except _Rejected:
            pass
        quarantine.extra.update(files=summary["files"], failed=failure is not None)

    if failure is not None:
        for artifact in (BRONZE_INTERACTIONS, BRONZE_ITEMS):
            _remove(artifact.path(root))
        raise IngestError(
            f"{failure.source_file}: {failure.quarantined} of {failure.rows_in} {failure.table} rows "
            f"({failure.bad_fraction:.1%}) quarantined > ingest.max_bad_fraction={icfg.max_bad_fraction}; "
            f"reasons in {QUARANTINE.path(root)}; bronze removed until a clean ingest"
        )
    summary["refreshed"] = refreshed
    summary["fingerprints"] = {
        a.name: read_manifest(a, root).fingerprint for a in (BRONZE_INTERACTIONS, BRONZE_ITEMS, QUARANTINE)
    }
    return summary


class _Rejected(Exception):
    """Internal: abandon the bronze writers (their temp dirs are discarded) but keep the quarantine."""
