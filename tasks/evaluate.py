"""Task `evaluate`: full-ranking metrics over seeds, both protocols, the claims with intervals, the report."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from tasks.common import stage_run, stage_task


@stage_task("evaluate")
def evaluate(cfg: Config, key: str) -> dict[str, Any]:
    """Aggregate test metrics (mean ± std), test the claims; write report.md + claims.json, publish them."""
    from cprec_core.evaluate import evaluate_run

    with stage_run("evaluate", cfg, key) as run:
        summary = evaluate_run(cfg)
        for domain, table in summary["tables"].items():
            run.publish(f"metrics-{domain}", table, f"{domain}: test metrics per variant, mean ± std")
        run.publish(
            "claims", summary["claims_md"], "the claims: effects, bootstrap intervals, Holm p, verdicts"
        )
        run.publish("report", summary["report_md"], "the full evaluation report")
    return summary
