"""How a stage spreads its per-domain work: the contract between the library and a task runner.

A stage that fans out (ingest, behaviors) takes a `DomainMap`: given the work of one domain and the
domains, it returns each domain's result in the same order. `in_process` runs them one after the
other here, `on_threads` on a pool of threads; the Prefect tasks pass one that maps a task over the
domains on threads or Dask (tasks/common.py). The work writes only under a staging directory the
stage owns; the stage commits the results after every domain is done.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DomainMap = Callable[[Callable[[str], Any], list[str]], list[Any]]


def in_process(work: Callable[[str], Any], domains: list[str]) -> list[Any]:
    """The default DomainMap: one domain after the other, in this process."""
    return [work(domain) for domain in domains]


def on_threads(workers: int) -> DomainMap:
    """A DomainMap on `workers` threads of this process (what the ingest task's default thread
    runner does, without Prefect): pyarrow, numpy and zlib work without the GIL."""

    def run(work: Callable[[str], Any], domains: list[str]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(work, domains))

    return run
