"""Task `behaviors`: DuckDB SQL (sql/) → silver items, events with splits, mixed sequences."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.schema import SILVER_EVENTS, SILVER_ITEMS, SILVER_MIXED
from tasks.common import stage_run, stage_task


@stage_task("behaviors")
def behaviors(cfg: Config, key: str) -> dict[str, Any]:
    """Dedupe, k-core, text filter, sequences, leave-one-out splits, mixed sequences."""
    from cprec_core.behaviors import build_behaviors

    with stage_run("behaviors", cfg, key) as run:
        summary = build_behaviors(cfg, progress=run.progress)
        for artifact in (SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED):
            run.validate(artifact)
        run.summary(summary, "Behaviors")
    return summary
