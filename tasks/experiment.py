"""Task `experiment-report`: merge the runs' reports into the experiment report and claims.json."""

from __future__ import annotations

from typing import Any

from prefect import task

from cprec_core.config import Config


@task(name="experiment-report")
def experiment_report(cfg: Config, runs: list) -> dict[str, Any]:
    """Write <root>/reports/<name>-experiment/ and publish its report as a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    from cprec_core.experiment import combine
    from tasks.common import artifact_key

    summary = combine(cfg, runs)
    create_markdown_artifact(
        markdown=summary["report_md"],
        key=artifact_key(f"{cfg.name}-experiment"),
        description="the experiment report: the paper's claims with intervals, every arm, every seed",
    )
    return summary
