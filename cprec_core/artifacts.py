"""Atomic artifact writes, manifests and content fingerprints.

Every artifact directory is built under a temporary sibling and renamed into place only after
all files and its `_manifest.json` are complete, so a crashed run never leaves a half-written
artifact that a later run would trust. Readers verify the manifest (file list and sizes, and
optionally content hashes) before reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cprec_core import __version__
from cprec_core.errors import UserError
from cprec_core.schema import Artifact

MANIFEST = "_manifest.json"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ArtifactError(UserError, RuntimeError):
    """An artifact is missing, incomplete or does not match its manifest."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version + hash of the library, the flows and tasks that wire it, and the SQL: part of
    every cache key, and what a GPU-pool child checks against its parent."""
    from cprec_core.resources import shipped

    h = hashlib.sha256()
    for base, pattern, prefix in (
        (PROJECT_ROOT / "cprec_core", "**/*.py", "cprec_core"),
        (PROJECT_ROOT / "flows", "*.py", "flows"),
        (PROJECT_ROOT / "tasks", "*.py", "tasks"),
        (shipped("sql"), "*.sql", "sql"),
    ):
        for p in sorted(base.glob(pattern)):
            h.update(f"{prefix}/{p.relative_to(base).as_posix()}".encode())
            h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing an older one.

    The old directory is first renamed aside, so at every instant `final` is either the old
    complete artifact, absent, or the new complete artifact: never a mix.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(trash)
    tmp.rename(final)
    _fsync_dir(final.parent)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file via temp + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def model_fingerprint(path: Path) -> str:
    """The identity of a base or trained LLM in every key and cache: the manifest fingerprint of a
    model cprec wrote (its files' hashes, taken when written), else a sha256 over the files of an
    HF directory (weights, config, tokenizer: every file not starting with '.' or '_') or of a
    .gguf file, memoised on their sizes and mtimes (hashed once per process, again only when
    rewritten)."""
    path = Path(path)
    with contextlib.suppress(ArtifactError):
        return verify(path).fingerprint
    if path.is_file():
        files = [path]
    else:
        files = sorted(f for f in path.glob("*") if f.is_file() and not f.name.startswith((".", "_")))
        if not (path / "config.json").is_file() or not any(f.suffix == ".safetensors" for f in files):
            files = []
    if not files:
        raise ArtifactError(
            f"{path}: not a model (an HF directory with config.json and *.safetensors, or a .gguf file)"
        )
    return _hash_files(tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@lru_cache(maxsize=32)
def _hash_files(stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(Path(name).name.encode())
        h.update(sha256_file(Path(name)).encode())
    return h.hexdigest()


def config_hash(*sections: Any) -> str:
    """Hash of config sections (pydantic models or plain JSON values)."""
    h = hashlib.sha256()
    for s in sections:
        value = s.model_dump(mode="json") if hasattr(s, "model_dump") else s
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def identity(config: Mapping[str, Any], inputs: Mapping[str, str], code: bool = True) -> str:
    """The one identity scheme of cached work (a stage, a fine-tuning run, a CPT job): its config
    values (JSON), its inputs' content fingerprints (manifests, `model_fingerprint`) and, unless
    `code=False`, the code version, through `config_hash`."""
    parts: dict[str, Any] = {"config": dict(config), "inputs": dict(inputs)}
    if code:
        parts["code"] = code_version()
    return config_hash(parts)


@dataclass
class Manifest:
    """What an artifact directory holds; written last, read first."""

    artifact: str
    rows: int
    files: dict[str, dict[str, Any]]
    schema: str
    fingerprint: str
    config_hash: str
    code_version: str
    created_at: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True, default=str)

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise ArtifactError(
                f"{directory}: no {MANIFEST}: artifact missing or incomplete; rerun its stage"
            )
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ArtifactError(f"{path}: unreadable manifest ({e}); rerun its stage") from None


def fingerprint_files(files: dict[str, dict[str, Any]]) -> str:
    """Content fingerprint of a set of files from their sha256s."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(files[name]["sha256"].encode())
    return h.hexdigest()


def partition_files(manifest: Manifest, directory: Path, column: str) -> dict[str, dict[str, Path]]:
    """The files a manifest lists under each partition (`<column>=<value>/...`), by value then path."""
    out: dict[str, dict[str, Path]] = {}
    for rel in manifest.files:
        head, _, rest = rel.partition("/")
        name, sep, value = head.partition("=")
        if rest and sep and name == column:
            out.setdefault(value, {})[rel] = Path(directory) / rel
    return out


def partition_fingerprints(manifest: Manifest, column: str) -> dict[str, str]:
    """Content fingerprint of each partition of an artifact (from its manifest, no file read)."""
    parts = partition_files(manifest, Path("."), column)
    return {
        value: fingerprint_files({rel: manifest.files[rel] for rel in rels}) for value, rels in parts.items()
    }


def link_or_copy(src: Path, dst: Path) -> None:
    """Files of an artifact are never rewritten in place: a hard link is a safe, free copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def finish_manifest(
    directory: Path,
    artifact: str,
    rows: int,
    schema: pa.Schema | None,
    cfg_hash: str,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Hash every file in `directory` and write its manifest (call before the final rename)."""
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    manifest = Manifest(
        artifact=artifact,
        rows=rows,
        files=files,
        schema=schema.to_string(show_schema_metadata=False) if schema is not None else "",
        fingerprint=fingerprint_files(files),
        config_hash=cfg_hash,
        code_version=code_version(),
        created_at=time.time(),
        extra=extra or {},
    )
    (Path(directory) / MANIFEST).write_text(manifest.to_json())
    return manifest


def update_extra(directory: Path, extra: dict[str, Any]) -> Manifest:
    """Replace the `extra` of an artifact's manifest (atomically); its files and fingerprint stay."""
    manifest = Manifest.load(directory)
    manifest.extra = extra
    atomic_write_text(Path(directory) / MANIFEST, manifest.to_json())
    return manifest


def verify(directory: Path, deep: bool = False) -> Manifest:
    """Load the manifest and check every listed file exists with its size (and hash if deep)."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    for rel, meta in manifest.files.items():
        p = directory / rel
        if not p.is_file():
            raise ArtifactError(f"{directory}: file {rel} listed in {MANIFEST} is missing")
        if p.stat().st_size != meta["bytes"]:
            raise ArtifactError(f"{p}: size {p.stat().st_size} != {meta['bytes']} in {MANIFEST}")
        if deep and sha256_file(p) != meta["sha256"]:
            raise ArtifactError(f"{p}: content hash differs from {MANIFEST}")
    return manifest


class DatasetWriter:
    """Stream Arrow tables into an artifact's Parquet dataset, atomically.

    Rows are appended per partition value (hive-style `<col>=<value>/part-0.parquet`; the column
    is also kept inside the files). Use as a context manager: the directory appears, complete
    with its manifest, only when the block exits without an error.
    """

    def __init__(
        self,
        artifact: Artifact,
        root: Path,
        cfg_hash: str = "",
        row_group_size: int = 128 * 1024,
    ) -> None:
        self.artifact = artifact
        self.final = artifact.path(root)
        self.cfg_hash = cfg_hash
        self.row_group_size = row_group_size
        self.rows = 0
        self.extra: dict[str, Any] = {}
        self.manifest: Manifest | None = None
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._ctx: contextlib.AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._adopted = False

    def __enter__(self) -> DatasetWriter:
        self._ctx = atomic_dir(self.final)
        self._tmp = self._ctx.__enter__()
        return self

    def _writer_for(self, part: str) -> pq.ParquetWriter:
        if part not in self._writers:
            assert self._tmp is not None
            sub = self._tmp / part if part else self._tmp
            sub.mkdir(parents=True, exist_ok=True)
            if (sub / "part-0.parquet").exists():  # adopted: a link to a live file, never written into
                raise ValueError(f"{self.artifact.name}: partition {part} written twice")
            self._writers[part] = pq.ParquetWriter(
                sub / "part-0.parquet", self.artifact.schema, compression="zstd"
            )
        return self._writers[part]

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Append rows (checked against the artifact's schema)."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            return
        table = self.artifact.check(table)
        col = self.artifact.partition
        if col is None:
            self._writer_for("").write_table(table, row_group_size=self.row_group_size)
        else:
            values = pc.unique(table[col]).to_pylist()
            for value in values:
                if value is None:
                    raise ValueError(f"{self.artifact.name}: null in partition column {col}")
                part = table if len(values) == 1 else table.filter(pc.equal(table[col], value))
                self._writer_for(f"{col}={value}").write_table(part, row_group_size=self.row_group_size)
        self.rows += table.num_rows

    def adopt(self, files: dict[str, Path]) -> None:
        """Take one unchanged partition of an earlier version of this artifact as it is (`files`:
        its paths relative to the artifact, e.g. from `partition_files`), linked, not rewritten."""
        assert self._tmp is not None
        for rel, src in sorted(files.items()):
            part = rel.partition("/")[0]
            if part in self._writers or (self._tmp / rel).exists():
                raise ValueError(f"{self.artifact.name}: partition {part} written twice")
            link_or_copy(src, self._tmp / rel)
            self.rows += pq.ParquetFile(self._tmp / rel).metadata.num_rows
            self._adopted = True

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._ctx is not None and self._tmp is not None
        for w in self._writers.values():
            w.close()
        if exc_type is None:
            if not self._writers and not self._adopted:  # an empty artifact: one zero-row file
                pq.write_table(self.artifact.schema.empty_table(), self._tmp / "part-0.parquet")
            self.manifest = finish_manifest(
                self._tmp, self.artifact.name, self.rows, self.artifact.schema, self.cfg_hash, self.extra
            )
        self._ctx.__exit__(exc_type, exc, tb)


def write_table(
    artifact: Artifact, root: Path, table: pa.Table, cfg_hash: str = "", extra: dict[str, Any] | None = None
) -> Manifest:
    """Write one whole table as an artifact (atomic, with manifest)."""
    with DatasetWriter(artifact, root, cfg_hash) as w:
        w.write(table)
        w.extra.update(extra or {})
    assert w.manifest is not None
    return w.manifest


def parquet_files(artifact: Artifact, root: Path, deep: bool = False) -> list[str]:
    """Verified list of an artifact's Parquet files (for DuckDB `read_parquet([...])`)."""
    directory = artifact.path(root)
    manifest = verify(directory, deep=deep)
    return [str(directory / rel) for rel in sorted(manifest.files) if rel.endswith(".parquet")]


def read_table(artifact: Artifact, root: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a whole artifact after verifying its manifest."""
    files = parquet_files(artifact, root)
    tables = [pq.read_table(f, columns=columns, schema=artifact.schema) for f in files]
    if not tables:
        return artifact.schema.empty_table()
    return pa.concat_tables(tables)


def read_manifest(artifact: Artifact, root: Path) -> Manifest:
    """The verified manifest of an artifact."""
    return verify(artifact.path(root))
