"""Task `ingest`: raw behaviour logs → bronze Parquet + quarantine (cprec_core.ingest)."""

from __future__ import annotations

from typing import Any

from prefect import task

from cprec_core.config import Config
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS
from tasks.common import cache_key, markdown_table, stage_run


@task(name="ingest", cache_key_fn=cache_key("ingest"), persist_result=True)
def ingest(cfg: Config, domains: list[str] | None = None) -> dict[str, Any]:
    """Read every configured source (optionally only `domains`), quarantine bad rows, validate."""
    from cprec_core.ingest.run import run_ingest

    with stage_run("ingest", cfg) as run:
        summary = run_ingest(cfg, domains=domains, progress=run.progress)
        run.validate(BRONZE_INTERACTIONS)
        run.validate(BRONZE_ITEMS)
        run.publish("ingest-counts", markdown_table(summary.get("files", [])), "rows in = kept + quarantined")
        run.summary(summary, "Ingest")
    return summary
