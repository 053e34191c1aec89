"""Task `ingest`: raw behaviour logs → bronze Parquet + quarantine (cprec_core.ingest)."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS
from tasks.common import markdown_table, stage_run, stage_task


@stage_task("ingest")
def ingest(cfg: Config, key: str, domains: list[str] | None = None) -> dict[str, Any]:
    """Read every configured source (optionally only `domains`), quarantine bad rows, validate."""
    from cprec_core.ingest.run import run_ingest

    with stage_run("ingest", cfg, key) as run:
        summary = run_ingest(cfg, domains=domains, progress=run.progress)
        run.validate(BRONZE_INTERACTIONS)
        run.validate(BRONZE_ITEMS)
        run.publish("ingest-counts", markdown_table(summary.get("files", [])), "rows in = kept + quarantined")
        run.summary(summary, "Ingest")
    return summary
