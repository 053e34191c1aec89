"""The `cprec-experiment` flow: the paper's claims in one run (cprec_core/experiment.py).

Runs the `cprec` flow once per arm (main, then the ablations, each a subflow with its own run root,
cached stage by stage like any run), then merges their reports. `cprec experiment --config F`
or `make realdata SCALE=tiny|smol` run it in-process.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from cprec_core.config import Config
from cprec_core.experiment import ARMS, arm_overrides
from flows.cprec import cprec, resolve_config
from tasks.experiment import experiment_report


@flow(name="cprec-experiment", log_prints=True)
def experiment(
    config: str | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    arms: list[str] | None = None,
) -> dict[str, Any]:
    """The arms of the experiment on `config` (+ `overrides`), then the combined report.

    arms: which of ARMS to run (default all; `main` always runs: the ablations start from its
    base model). A report without an ablation arm leaves its claim untested.
    """
    logger = get_run_logger()
    cfg = resolve_config(config, overrides)
    selected = ["main", *[a for a in ARMS[1:] if a in (arms or ARMS)]]
    unknown = set(arms or []) - set(ARMS)
    if unknown:
        raise ValueError(f"arms {sorted(unknown)} unknown; arms: {', '.join(ARMS)}")
    arm_cfgs: dict[str, Config] = {}
    seconds: dict[str, float] = {}
    for arm in selected:
        arm_set = [*(overrides or []), *arm_overrides(cfg, arm)]
        arm_cfgs[arm] = resolve_config(config, arm_set)
        logger.info("arm %s: root %s, overrides %s", arm, arm_cfgs[arm].root, arm_set)
        started = time.perf_counter()
        cprec.with_options(flow_run_name=f"{cfg.name}-{arm}")(config=config, stages="all", overrides=arm_set)
        seconds[arm] = time.perf_counter() - started
    return experiment_report(cfg, arm_cfgs, seconds)
