"""Task `ingest`: raw behaviour logs → bronze Parquet + quarantine (cprec_core.ingest), each
domain read by its own `ingest-domain` task on the configured task runner (threads or Dask)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.futures import wait

from cprec_core.config import Config
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS
from tasks.common import markdown_table, stage_run, stage_task, task_runner


@task(name="ingest-domain", task_run_name="ingest-{domain}", cache_policy=NONE)
def ingest_domain(read: Callable[[str], list[dict[str, Any]]], domain: str) -> list[dict[str, Any]]:
    """One domain's raw files into staged partitions (`read` is run_ingest's; the stage task caches)."""
    return read(domain)


def on_task_runner(cfg: Config):
    """run_ingest's DomainMap: one `ingest-domain` task a domain, on the configured task runner."""

    def run(read: Callable[[str], list[dict[str, Any]]], domains: list[str]) -> list[list[dict[str, Any]]]:
        with task_runner(cfg.orchestration) as runner:
            futures = [runner.submit(ingest_domain, {"read": read, "domain": d}) for d in domains]
            wait(futures)  # all of them ended before any error is raised: nothing still writes
            return [f.result() for f in futures]

    return run


@stage_task("ingest")
def ingest(cfg: Config, key: str, domains: list[str] | None = None) -> dict[str, Any]:
    """Read every configured source (optionally only `domains`), quarantine bad rows, validate."""
    from cprec_core.ingest.run import run_ingest

    with stage_run("ingest", cfg, key) as run:
        orch = cfg.orchestration
        one_at_a_time = orch.task_runner == "threads" and orch.workers == 1  # one progress bar at a time
        summary = run_ingest(
            cfg, domains=domains, progress=run.progress and one_at_a_time, map_domains=on_task_runner(cfg)
        )
        run.validate(BRONZE_INTERACTIONS)
        run.validate(BRONZE_ITEMS)
        run.publish("ingest-counts", markdown_table(summary.get("files", [])), "rows in = kept + quarantined")
        run.summary(summary, "Ingest")
    return summary
