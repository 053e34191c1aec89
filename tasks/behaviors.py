"""Task `behaviors`: DuckDB SQL (sql/) → silver items, events with splits, mixed sequences."""

from __future__ import annotations

from typing import Any

from prefect import task

from cprec_core.config import Config
from cprec_core.schema import SILVER_EVENTS, SILVER_ITEMS, SILVER_MIXED
from tasks.common import cache_key, stage_run


@task(name="behaviors", cache_key_fn=cache_key("behaviors"), persist_result=True)
def behaviors(cfg: Config) -> dict[str, Any]:
    """Dedupe, k-core, text filter, sequences, leave-one-out splits, mixed sequences."""
    from cprec_core.behaviors import build_behaviors

    with stage_run("behaviors", cfg) as run:
        summary = build_behaviors(cfg, progress=run.progress)
        for artifact in (SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED):
            run.validate(artifact)
        run.summary(summary, "Behaviors")
    return summary
