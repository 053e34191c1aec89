"""The `cprec-experiment` flow: the paper's claims with controls and CPT seeds (cprec_core/experiment.py).

Runs the `cprec` flow once per planned run (main's data stages and the variants without CPT
first, then every arm at every CPT seed; each a subflow, cached stage by stage like any run), then
merges their reports. `cprec experiment --config F` or `make realdata SCALE=tiny|smol` run it
in-process.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from cprec_core.experiment import plan
from flows.cprec import cprec, resolve_config
from tasks.experiment import experiment_report


@flow(name="cprec-experiment", log_prints=True)
def experiment(
    config: str | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    arms: list[str] | None = None,
) -> dict[str, Any]:
    """Every planned run of the experiment on `config` (+ `overrides`), then the combined report.

    arms: which of ARMS to run (default experiment.arms; `main` always runs: the others start from
    its base model). A report without an ablation arm leaves its claim untested.
    """
    logger = get_run_logger()
    cfg = resolve_config(config, overrides)
    runs = plan(cfg, ["main", *(cfg.experiment.arms if arms is None else arms)])
    done = []
    for i, run in enumerate(runs, start=1):
        run_overrides = [*(overrides or []), *run.overrides]
        run_cfg = resolve_config(config, run_overrides)
        logger.info(
            "experiment run %d/%d: arm %s, CPT seed %s, stages %s, root %s",
            i,
            len(runs),
            run.arm,
            "-" if run.cpt_seed is None else run.cpt_seed,
            ",".join(run.stages),
            run_cfg.root,
        )
        started = time.perf_counter()
        cprec.with_options(flow_run_name=run_cfg.name)(
            config=config, stages=list(run.stages), overrides=run_overrides
        )
        done.append((run, run_cfg, time.perf_counter() - started))
    return experiment_report(cfg, done)
