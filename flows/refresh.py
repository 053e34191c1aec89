"""The `cprec-refresh` flow, incremental corpus refresh (deployment `cprec-refresh/corpus-refresh`,
hourly and when logs arrive; `cprec refresh`): re-ingest only changed domains, rebuild the joins and
the corpus through the same stage tasks and caches as the `cprec` flow, and emit
`cprec.corpus.updated` so that a deployment trigger can start CPT — only when gold.corpus's content
changed (new logs of a downstream domain refresh bronze and silver, and leave the corpus as it was).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event

import flows.cprec as pipeline  # its run_stage, looked up at call time: one stage runner for both flows
from cprec_core.config import Config
from cprec_core.refresh import (
    RefreshBusy,
    changed_domains,
    clear_corpus_baseline,
    corpus_baseline,
    corpus_fingerprint,
    ingest_scope,
    refresh_lock,
    save_fingerprints,
)
from cprec_core.stages import REFRESHED

EVENT = "cprec.corpus.updated"
ARRIVED = "cprec.logs.arrived"  # new raw logs: the corpus-refresh deployment's trigger (deploy/prefect.yaml)


def notify_logs(path: str, run: str, config: str) -> None:
    """Tell the Prefect server that new raw logs arrived under `path`: the refresh deployment's
    trigger then runs a refresh with `config` (a config file the workers can read)."""
    payload = {"path": path, "config": config}
    emit_event(ARRIVED, resource={"prefect.resource.id": f"cprec.logs.{run}"}, payload=payload)


@flow(name="cprec-refresh", log_prints=True)
def corpus_refresh(
    config: str | dict[str, Any] | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """One refresh: a no-op when no raw file changed; never two at once for the same run root.

    config: YAML path or mapping (default: built-in defaults); overrides: dotted `key=value` strings.
    """
    return refresh_corpus(pipeline.resolve_config(config, overrides))


def refresh_corpus(cfg: Config) -> dict[str, Any]:
    """The refresh's body: changed domains → their ingest, the other refreshed stages, the event."""
    logger = get_run_logger()
    try:
        with refresh_lock(cfg):
            changed, fingerprints = changed_domains(cfg)
            if not changed:
                logger.info("no new or changed raw files: nothing to do")
                return {"status": "unchanged", "changed_domains": []}
            logger.info("changed domains: %s", ", ".join(changed))
            before = corpus_baseline(cfg)
            # ingest reads only the changed domains; behaviors rebuilds only those, corpus only when
            # its pretrain inputs moved
            results = {"ingest": pipeline.run_stage("ingest", cfg, domains=ingest_scope(cfg, changed))}
            for stage in (s for s in REFRESHED if s != "ingest"):
                results[stage] = pipeline.run_stage(stage, cfg)
            # tell, then forget the baseline, then record the raw state: a crash between any two
            # of these makes the next refresh redo the work and tell again (never tell nothing)
            status, payload = "corpus-unchanged", {"changed_domains": changed}
            if corpus_fingerprint(cfg) == before:
                logger.info("the corpus is unchanged (no pretrain input moved): no %s event", EVENT)
            else:
                status = "updated"
                payload |= {"documents": results[REFRESHED[-1]].get("documents"), "run": cfg.name}
                resource = {"prefect.resource.id": f"cprec.corpus.{cfg.name}"}
                emit_event(EVENT, resource=resource, payload=payload)
            clear_corpus_baseline(cfg)
            save_fingerprints(cfg, fingerprints)
    except RefreshBusy as e:
        logger.warning("%s: this run exits without work", e)
        return {"status": "busy", "changed_domains": []}
    return {"status": status, **payload, "results": results}
