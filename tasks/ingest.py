"""Task `ingest`: raw behaviour logs → bronze Parquet + quarantine (cprec_core.ingest), each
domain read by its own `ingest-<domain>` task on the configured task runner (threads or Dask)."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.schema import BRONZE_INTERACTIONS, BRONZE_ITEMS
from tasks.common import markdown_table, on_task_runner, stage_run, stage_task


@stage_task("ingest")
def ingest(cfg: Config, key: str, domains: list[str] | None = None) -> dict[str, Any]:
    """Read every configured source (optionally only `domains`), quarantine bad rows, validate."""
    from cprec_core.ingest.run import run_ingest

    with stage_run("ingest", cfg, key) as run:
        orch = cfg.orchestration
        # one progress bar at a time
        one_at_a_time = orch.task_runner == "threads" and orch.worker_count() == 1
        summary = run_ingest(
            cfg,
            domains=domains,
            progress=run.progress and one_at_a_time,
            map_domains=on_task_runner(cfg, "ingest"),
        )
        run.validate(BRONZE_INTERACTIONS)
        run.validate(BRONZE_ITEMS)
        run.publish("ingest-counts", markdown_table(summary.get("files", [])), "rows in = kept + quarantined")
        run.summary(summary, "Ingest")
    return summary
