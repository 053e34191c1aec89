"""One writer per run root: an exclusive lock that every stage takes, and the sweep of leftovers
that a killed writer can leave behind (temp directories, scratch files).

flock is released by the kernel when its holder dies, so a killed run never leaves a stale lock.
The lock is re-entrant within a thread (evaluate calls finetune) and exclusive across threads and
processes, so two runs on one root (a manual rerun while the scheduled refresh works) queue up
instead of interleaving their writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cprec_core.paths import scratch_dir, state_dir

log = logging.getLogger(__name__)
_held = threading.local()
F = TypeVar("F", bound=Callable[..., Any])


class LockBusy(RuntimeError):
    """A non-blocking lock is held by another run."""


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[None]:
    """An exclusive flock on `path`; raises LockBusy when `blocking` is False and it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if not blocking:
                raise LockBusy(f"{path} is held by another run") from None
            log.warning("waiting for %s: another run is writing to this run root", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sweep_leftovers(root: Path) -> list[Path]:
    """Remove what killed writers left: `.<name>.tmp-*` / `.<name>.old-*` directories and scratch
    under `<root>/tmp`. Only safe while holding the run-root lock (no writer is active)."""
    removed = [p for p in Path(root).rglob(".*.tmp-*") if p.is_dir()]
    removed += [p for p in Path(root).rglob(".*.old-*") if p.is_dir()]
    scratch = scratch_dir(root)
    if scratch.is_dir():  # an empty directory (DuckDB's spill parent) is no one's leftover: kept
        removed += [p for p in scratch.iterdir() if not (p.is_dir() and not any(p.iterdir()))]
    for p in removed:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def run_root_lock(root: Path) -> Iterator[None]:
    """Hold the run root's writer lock (re-entrant in this thread); sweep leftovers on entry."""
    key = str(Path(root).resolve())
    depth: dict[str, int] = getattr(_held, "depth", None) or {}
    _held.depth = depth
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    with file_lock(state_dir(root) / "run.lock"):
        depth[key] = 1
        try:
            swept = sweep_leftovers(Path(root))
            if swept:
                log.info("removed %d leftovers of an interrupted run under %s", len(swept), root)
            yield
        finally:
            depth[key] = 0


def holds_run_lock(fn: F) -> F:
    """Decorate a stage function whose first argument is the Config: it runs under the lock."""

    @functools.wraps(fn)
    def wrapper(cfg, *args: Any, **kwargs: Any) -> Any:
        with run_root_lock(cfg.root):
            return fn(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
