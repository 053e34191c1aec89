"""The `cprec` flow: the whole pipeline, or any subset of its stages, as one Prefect flow run.

Run in-process (Prefect's ephemeral API) with `python -m flows.cprec --config configs/demo.yaml`
or `cprec run`, or on a server through the deployments in deploy/prefect.yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from cprec_core.artifacts import code_version
from cprec_core.config import Config, apply_overrides, config_from_dict, load_config
from cprec_core.errors import UserError
from cprec_core.paths import state_dir
from cprec_core.refresh import domain_fingerprints, save_fingerprints
from cprec_core.stages import REFRESHED, STAGES, gpu_deployment, outputs_match, parse_stages, stage_key

# each stage's task: tasks/<stage>.py defines a task of the stage's name (the registry's convention)
TASKS = {stage: getattr(importlib.import_module(f"tasks.{stage}"), stage) for stage in STAGES}


class CodeVersionMismatch(UserError, RuntimeError):
    """A GPU-pool child runs other code than the parent that handed it the stage."""


class HandOffFailed(UserError, RuntimeError):
    """A stage handed to the GPU pool failed there; the message is the child's error line."""


@contextlib.contextmanager
def embedded_runs(always: bool = False) -> Iterator[None]:
    """Flow runs on Prefect's ephemeral API (no PREFECT_API_URL; or `always`) without heartbeats.
    Heartbeats feed a server's crashed-run automations, which an embedded run has none of, and
    Prefect 3.9 ends every flow run by waiting up to 1 s for its heartbeat thread (a bare flow run
    here: 1.08 s with, 0.09 s without). With a server, runs keep their heartbeats."""
    if PREFECT_API_URL.value() and not always:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def resolve_config(config: str | dict[str, Any] | Config | None, overrides: list[str] | None) -> Config:
    """A flow parameter (path, mapping or Config) with `overrides` applied → validated Config."""
    if isinstance(config, Config):
        config = config.model_dump(mode="json")
    if isinstance(config, dict):
        data = apply_overrides(copy.deepcopy(config), overrides or [])
        return config_from_dict(data, origin="flow parameter config")
    return load_config(config, overrides or [])


def result_storage(cfg: Config) -> str | Path:
    """Where persisted task results live: a saved Prefect storage block (e.g. 's3-bucket/cprec'),
    else a local directory under the run root."""
    return cfg.orchestration.result_storage or (state_dir(cfg.root) / "prefect-results").resolve()


def run_stage(stage: str, cfg: Config, **kwargs: Any) -> Any:
    """Run one stage task; reuse its cached result only while its outputs on disk match the key."""
    key = stage_key(stage, cfg)  # computed once: the task caches, logs and stamps under it
    fresh = not outputs_match(stage, cfg, key)
    task = TASKS[stage].with_options(refresh_cache=fresh, result_storage=result_storage(cfg))
    return task(cfg, key, **kwargs)


@flow(name="cprec", log_prints=True)
def cprec(
    config: str | dict[str, Any] | None = None,
    stages: list[str] | str = "all",
    overrides: list[str] | None = None,
    parent_code_version: str | None = None,
) -> dict[str, Any]:
    """Run the selected stages in order; each is a cached, validated task.

    config: YAML path or mapping (default: built-in defaults); stages: 'all', 'a,b' or a list;
    overrides: dotted `key=value` strings applied on top of the config (the refresh is its own flow,
    flows/refresh.py); parent_code_version: set by a parent that hands this run its GPU stages: the
    run refuses to start on other code.
    """
    if parent_code_version is not None and parent_code_version != code_version():
        raise CodeVersionMismatch(
            f"this worker runs cprec {code_version()}, the parent flow run {parent_code_version}: "
            "deploy the same commit on every node"
        )
    cfg = resolve_config(config, overrides)
    logger = get_run_logger()
    selected = parse_stages(stages)
    logger.info("run %s: stages %s, root %s", cfg.name, ", ".join(selected), Path(cfg.root).resolve())
    # a run of every refreshed stage leaves the corpus in step with the raw files
    raw = domain_fingerprints(cfg) if set(selected) >= set(REFRESHED) else None
    results: dict[str, Any] = {}
    for group in stage_groups(selected, cfg):
        if gpu_deployment(group[0]) and cfg.orchestration.gpu_pool and not all_cached(group, cfg):
            results.update(dict.fromkeys(group, run_on_gpu_pool(group, cfg)))
        else:
            results.update({stage: run_stage(stage, cfg) for stage in group})
        if raw is not None and group[-1] == REFRESHED[-1]:
            save_fingerprints(cfg, raw)  # so a refresh right after this run is a no-op
    return results


def stage_groups(selected: list[str], cfg: Config) -> list[list[str]]:
    """The stages in order, consecutive ones of one GPU deployment together (pack + cpt) when a GPU
    pool is set; otherwise one stage a group."""
    groups: list[list[str]] = []
    for stage in selected:
        deployment = gpu_deployment(stage) if cfg.orchestration.gpu_pool else None
        if deployment and groups and gpu_deployment(groups[-1][-1]) == deployment:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def all_cached(stages: list[str], cfg: Config) -> bool:
    """Every stage's outputs on disk match its key: reading them back needs no GPU job."""
    return all(outputs_match(stage, cfg, stage_key(stage, cfg)) for stage in stages)


def child_parameters(stages: list[str], cfg: Config) -> dict[str, Any]:
    """What a GPU-pool child run gets: the resolved config as a mapping (its absolute run root
    included: not a path the node would resolve) with no pool of its own (it runs the stages, it
    does not hand them on), and this run's code version to check."""
    config = cfg.model_dump(mode="json")
    config["orchestration"]["gpu_pool"] = None
    return {"config": config, "stages": stages, "overrides": [], "parent_code_version": code_version()}


def run_on_gpu_pool(stages: list[str], cfg: Config) -> dict[str, Any]:
    """Hand GPU stages to their deployment (bound to the GPU work pool) and wait for it; a failed
    child fails this run with the child's error line."""
    name = f"cprec/{gpu_deployment(stages[0])}"
    get_run_logger().info(
        "stages %s: handed to %s on pool %s", ",".join(stages), name, cfg.orchestration.gpu_pool
    )
    flow_run = run_deployment(
        name=name,
        parameters=child_parameters(stages, cfg),
        timeout=None,
    )
    state = flow_run.state
    if state is None or not state.is_completed():
        why = state.message if state is not None and state.message else "no final state"
        raise HandOffFailed(f"stages {','.join(stages)} on the GPU pool (flow run {flow_run.name}): {why}")
    return {"flow_run_id": str(flow_run.id), "state": state.name}


def main() -> None:
    """`python -m flows.cprec --config F --stages a,b`: run the flow in-process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--stages", default="all")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cprec(config=args.config, stages=args.stages, overrides=args.overrides)


if __name__ == "__main__":
    main()
