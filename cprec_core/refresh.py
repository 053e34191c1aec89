"""Incremental corpus refresh: which raw domain files changed since the last refresh, and a lock
so that two refreshes never run at once.

State: `<root>/state/raw_fingerprints.json` (domain → fingerprint of its raw files), written only
after a refresh fully succeeded, so a crashed refresh is simply redone by the next one; and
`corpus_before_refresh.json`, the corpus a refresh started from, kept until the refresh has said
whether the corpus changed, so a crashed one's change is still announced. Reads the raw sources
through the ingest readers' discovery, writes nothing else.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from cprec_core.artifacts import ArtifactError, atomic_write_text, config_hash, verify
from cprec_core.config import Config
from cprec_core.locks import LockBusy, file_lock
from cprec_core.paths import state_dir
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS, GOLD_CORPUS


class RefreshBusy(LockBusy):
    """Another refresh holds the lock for this run root."""


def domain_fingerprints(cfg: Config) -> dict[str, str]:
    """domain → hash of (path, size, mtime) of its raw files, as the ingest readers find them.

    Hashing tens of GB of logs on every check would cost more than ingesting them; size + mtime
    is what rsync and make trust, and rewriting a file changes its mtime. A `synthetic` source's
    files are a function of the `synth` section: they are fingerprinted by it, so computing a key
    never generates them (ingest does). Hashed with `config_hash`, without the code version: a
    code edit is not new raw data.
    """
    from cprec_core.ingest.common import domain_for
    from cprec_core.ingest.run import READERS, no_raw_files

    per_domain: dict[str, list[str]] = {}
    for source in cfg.ingest.sources:
        if source.format == "synthetic":
            synth = cfg.synth.model_copy(update={"out_dir": Path(source.path)}).fingerprint()
            for name in cfg.synth.domains:
                domain = domain_for(name, source, Path(source.path))
                if domain is not None:
                    per_domain.setdefault(domain, []).append(f"synthetic:{source.path}:{name}:{synth}")
            continue
        for raw in READERS[source.format](source, cfg.ingest):
            st = Path(raw.path).stat()
            per_domain.setdefault(raw.domain, []).append(f"{raw.path}:{st.st_size}:{st.st_mtime_ns}")
    if not per_domain:
        raise no_raw_files(cfg.ingest)
    return {d: config_hash(sorted(v)) for d, v in per_domain.items()}


def _state_path(cfg: Config) -> Path:
    return state_dir(cfg.root) / "raw_fingerprints.json"


def changed_domains(cfg: Config) -> tuple[list[str], dict[str, str]]:
    """Domains whose raw files are new or changed since the last successful refresh."""
    current = domain_fingerprints(cfg)
    path = _state_path(cfg)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    changed = sorted(d for d, fp in current.items() if previous.get(d) != fp)
    return changed, current


def ingest_scope(cfg: Config, changed: list[str]) -> list[str] | None:
    """Domains to re-ingest: only the changed ones when complete bronze exists, else all (None)."""
    try:
        verify(BRONZE_INTERACTIONS.path(cfg.root))
        verify(BRONZE_ITEMS.path(cfg.root))
    except ArtifactError:
        return None
    return changed


def corpus_fingerprint(cfg: Config) -> str | None:
    """gold.corpus's content fingerprint, None when there is none."""
    try:
        return verify(GOLD_CORPUS.path(cfg.root)).fingerprint
    except ArtifactError:
        return None


def _baseline_path(cfg: Config) -> Path:
    return state_dir(cfg.root) / "corpus_before_refresh.json"


def corpus_baseline(cfg: Config) -> str | None:
    """The corpus fingerprint a refresh compares its result with, to tell CPT whether anything is
    new (a downstream domain's new logs leave the corpus as it was): the one recorded by a refresh
    that did not finish (it may have rebuilt the corpus and died before telling anyone), else the
    current one, recorded now until `clear_corpus_baseline`."""
    path = _baseline_path(cfg)
    if path.is_file():
        return json.loads(path.read_text())["fingerprint"]
    current = corpus_fingerprint(cfg)
    atomic_write_text(path, json.dumps({"fingerprint": current}))
    return current


def clear_corpus_baseline(cfg: Config) -> None:
    """The refresh has told what it changed (or that nothing did): the next one starts afresh."""
    _baseline_path(cfg).unlink(missing_ok=True)


def save_fingerprints(cfg: Config, fingerprints: dict[str, str]) -> None:
    """Record the raw state a refresh has fully processed."""
    atomic_write_text(_state_path(cfg), json.dumps(fingerprints, indent=2, sort_keys=True))


@contextlib.contextmanager
def refresh_lock(cfg: Config) -> Iterator[None]:
    """An exclusive, non-blocking lock per run root; raises RefreshBusy if another refresh holds it."""
    try:
        with file_lock(state_dir(cfg.root) / "refresh.lock", blocking=False):
            yield
    except LockBusy as e:
        raise RefreshBusy(f"another corpus refresh is running ({e})") from None
