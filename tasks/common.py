"""What every stage task shares: its cache key, validation, UI artifacts and the stage stamp.

A stage task is `@stage_task(name)` over `def name(cfg, key, ...)`, its body `with stage_run(name,
cfg, key) as run: ...`: the run validates artifacts with their GX suites (attaching the results as
markdown artifacts), publishes summaries, and on success records which cache key produced the
outputs on disk (see cprec_core.stages.outputs_match). `key` is the stage key the flow computed
once for this run (cprec_core.stages.stage_key): the cache, the log and the stamp all use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from cprec_core.config import Config, OrchestrationConfig
from cprec_core.fanout import DomainMap
from cprec_core.schema import Artifact
from cprec_core.stages import record_stage
from cprec_core.validate import ValidationFailed, validate_artifact

T = TypeVar("T")


def stage_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Prefect cache_key_fn of a stage task: the stage key it was given (content fingerprints of
    its inputs + its config + code); a partial (refresh) ingest is its own cache entry."""
    key = parameters["key"]
    only = parameters.get("domains")
    return f"{key}-{'-'.join(sorted(only))}" if only else key


def stage_task(name: str) -> Callable[[Callable[..., T]], Task[..., T]]:
    """The Prefect task of a stage: named as the stage, cached under its key, result persisted."""
    return task(name=name, cache_key_fn=stage_cache_key, persist_result=True)


def task_runner(orch: OrchestrationConfig) -> TaskRunner:
    """The Prefect task runner of a stage's fan-out: threads here, or a Dask cluster (an existing one
    at orchestration.dask_address, else a LocalCluster of orchestration.workers processes)."""
    if orch.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=orch.worker_count())
    from prefect_dask import DaskTaskRunner

    if orch.dask_address:
        return DaskTaskRunner(address=orch.dask_address)
    local = {
        "n_workers": orch.worker_count(),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    api = PREFECT_API_URL.value()
    if api:  # the worker processes report their task runs to this run's Prefect API
        local["env"] = {"PREFECT_API_URL": api}
    return DaskTaskRunner(cluster_kwargs=local)


def fans_out(orch: OrchestrationConfig) -> bool:
    """Whether behaviors spreads its domains over tasks: on a Dask cluster only. On threads each
    domain's DuckDB would compete for the cores one DuckDB already uses (5 M interactions, 2 cores:
    7.9 s on two threads, 7.3 s in one DuckDB); ingest, Python on one core, always fans out."""
    return orch.task_runner == "dask"


@task(name="domain-part", task_run_name="{stage}-{domain}", cache_policy=NONE)
def domain_part(stage: str, work: Callable[[str], Any], domain: str) -> Any:
    """One domain's share of a stage's work (`work` is the stage's; the stage task caches)."""
    return work(domain)


def on_task_runner(cfg: Config, stage: str) -> DomainMap:
    """A stage's DomainMap (cprec_core.fanout): one `<stage>-<domain>` task a domain, on the
    configured task runner; every task has ended before an error is raised (nothing still writes)."""

    def run(work: Callable[[str], Any], domains: list[str]) -> list[Any]:
        with task_runner(cfg.orchestration) as runner:
            futures = [
                runner.submit(domain_part, {"stage": stage, "work": work, "domain": d}) for d in domains
            ]
            wait(futures)
            return [f.result() for f in futures]

    return run


def suite_params(cfg: Config) -> dict[str, Any]:
    """The config values GX suites check against."""
    return {
        "min_ts": cfg.ingest.min_ts,
        "max_ts": cfg.ingest.max_ts,
        "min_title_chars": cfg.behaviors.min_title_chars,
        "max_items": cfg.corpus.max_items,
        "seq_len": cfg.pack.seq_len,
        "top_k": cfg.recommend.top_k,
    }


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A list of flat dicts as a markdown table."""
    if not rows:
        return "_(no rows)_\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "\\|")


class StageRun:
    """Helpers available inside a stage task body."""

    def __init__(self, stage: str, cfg: Config) -> None:
        self.stage = stage
        self.cfg = cfg
        self.logger = get_run_logger()
        self.progress = sys.stdout.isatty()

    def validate(self, artifact: Artifact, root: Path | None = None) -> None:
        """Run the artifact's GX suite (under `root`, default the run root); publish the result; fail
        the task on a broken expectation."""
        where = self.cfg.root if root is None else root
        # the run root's artifacts remember what passed (a refresh re-reads only what moved); a
        # per-run one elsewhere (serving/<name>) is small and keeps no state beside it
        remember = root is None
        report = validate_artifact(
            artifact, where, suite_params(self.cfg), raise_on_failure=False, remember=remember
        )
        self.publish(f"validation-{artifact.name}", report.to_markdown(), f"GX suite of {artifact.name}")
        if not report.success:
            raise ValidationFailed(report.failure_message())
        self.logger.info(
            "%s: %d rows passed %d expectations (and %d rows of unchanged files passed them before)",
            artifact.name,
            report.rows,
            len(report.outcomes),
            report.rows_passed_before,
        )

    def publish(self, name: str, markdown: str, description: str) -> None:
        """Attach a markdown artifact to the task run (keyed per run name, so the UI keeps history)."""
        create_markdown_artifact(
            markdown=markdown, key=artifact_key(f"{self.cfg.name}-{name}"), description=description
        )

    def summary(self, summary: dict[str, Any], title: str) -> None:
        """Log the summary's headline (its scalar entries) and publish the whole of it as an artifact."""
        name = f"{self.stage}-summary"
        key = artifact_key(f"{self.cfg.name}-{name}")
        self.logger.info("%s: %s (all of it: artifact %s)", self.stage, headline(summary), key)
        body = f"## {title}\n\n```json\n{json.dumps(summary, indent=2, default=str)[:20000]}\n```\n"
        self.publish(name, body, title)


def headline(summary: dict[str, Any], width: int = 300) -> str:
    """The top-level numbers and strings of a summary as one short `key=value, ...` line."""
    parts = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in summary.items()
        if isinstance(v, int | float | str | bool) and len(str(v)) <= 80
    ]
    line = ", ".join(parts) or f"{len(summary)} entries"
    return line if len(line) <= width else line[: width - 3] + "..."


LIBRARY_LOGGERS = ("cprec_core", "cprec")  # the library's module loggers and the CPT launcher's


class _InRun(logging.Filter):
    """Pass only records logged inside a flow or task run (the API handler needs a run to attach to)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def library_logs_to_run_log() -> None:
    """Send the library's INFO records to the Prefect run log (once per process), so a run on a worker
    shows what cprec_core logs (locks waited on, leftovers swept, resumes, CPT launches), not only a TTY."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if any(isinstance(h, APILogHandler) for h in logger.handlers):
            continue
        handler = APILogHandler(level=logging.INFO)
        handler.addFilter(_InRun())
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


@contextlib.contextmanager
def stage_run(stage: str, cfg: Config, key: str) -> Iterator[StageRun]:
    """Run a stage body; on success, stamp the outputs with the key that produced them."""
    library_logs_to_run_log()
    run = StageRun(stage, cfg)
    run.logger.info("stage %s (key %s) writing under %s", stage, key, Path(cfg.root).resolve())
    yield run
    record_stage(stage, cfg, key)
