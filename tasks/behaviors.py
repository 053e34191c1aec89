"""Task `behaviors`: DuckDB SQL (sql/) → silver items, events with splits, mixed sequences; with
more than one worker, each changed domain built by its own `behaviors-<domain>` task (threads or
Dask), then joined."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.schema import SILVER_EVENTS, SILVER_ITEMS, SILVER_MIXED
from tasks.common import fans_out, on_task_runner, stage_run, stage_task


@stage_task("behaviors")
def behaviors(cfg: Config, key: str) -> dict[str, Any]:
    """Dedupe, k-core, text filter, sequences, leave-one-out splits, mixed sequences."""
    from cprec_core.behaviors import build_behaviors

    with stage_run("behaviors", cfg, key) as run:
        spread = on_task_runner(cfg, "behaviors") if fans_out(cfg.orchestration) else None
        summary = build_behaviors(cfg, progress=run.progress, map_domains=spread)
        for artifact in (SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED):
            run.validate(artifact)
        run.summary(summary, "Behaviors")
    return summary
