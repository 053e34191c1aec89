"""The `cprec` flow: the whole pipeline, or any subset of its stages, as one Prefect flow run.

Run in-process (Prefect's ephemeral API) with `python -m flows.cprec --config configs/demo.yaml`
or `cprec run`, or on a server through the deployments in deploy/prefect.yaml.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from cprec_core.config import Config, apply_overrides, config_from_dict, load_config
from cprec_core.stages import outputs_match, parse_stages, stage_key
from flows.refresh import run_refresh
from tasks.behaviors import behaviors
from tasks.corpus import corpus
from tasks.cpt import cpt
from tasks.evaluate import evaluate
from tasks.finetune import finetune
from tasks.ingest import ingest
from tasks.pack import pack
from tasks.recommend import recommend

TASKS = {
    "ingest": ingest,
    "behaviors": behaviors,
    "corpus": corpus,
    "pack": pack,
    "cpt": cpt,
    "finetune": finetune,
    "evaluate": evaluate,
    "recommend": recommend,
}
GPU_STAGES = ("cpt", "finetune")


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
    return cfg.orchestration.result_storage or (cfg.root / "state" / "prefect-results").resolve()


def run_stage(stage: str, cfg: Config, **kwargs: Any) -> Any:
    """Run one stage task; reuse its cached result only while its outputs on disk match the key."""
    fresh = not outputs_match(stage, cfg, stage_key(stage, cfg))
    task = TASKS[stage].with_options(refresh_cache=fresh, result_storage=result_storage(cfg))
    return task(cfg, **kwargs)


@flow(name="cprec", log_prints=True)
def cprec(
    config: str | dict[str, Any] | None = None,
    stages: list[str] | str = "all",
    overrides: list[str] | None = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """Run the selected stages in order; each is a cached, validated task.

    config: YAML path or mapping (default: built-in defaults); stages: 'all', 'a,b' or a list;
    overrides: dotted `key=value` strings applied on top of the config; refresh: instead of
    `stages`, re-ingest only changed raw domains and rebuild the corpus (flows/refresh.py).
    """
    cfg = resolve_config(config, overrides)
    if refresh:
        return run_refresh(cfg, run_stage)
    logger = get_run_logger()
    selected = parse_stages(stages)
    logger.info("run %s: stages %s, root %s", cfg.name, ", ".join(selected), Path(cfg.root).resolve())
    results: dict[str, Any] = {}
    for stage in selected:
        if stage in GPU_STAGES and cfg.orchestration.gpu_pool:
            results[stage] = run_on_gpu_pool(stage, config, overrides)
        else:
            results[stage] = run_stage(stage, cfg)
    return results


def run_on_gpu_pool(stage: str, config: Any, overrides: list[str] | None) -> dict[str, Any]:
    """Hand a GPU stage to its deployment (bound to the GPU work pool) and wait for it."""
    flow_run = run_deployment(
        name=f"cprec/{stage}",
        parameters={"config": config, "stages": [stage], "overrides": overrides or []},
        timeout=None,
    )
    if not flow_run.state or not flow_run.state.is_completed():
        raise RuntimeError(f"stage {stage} on the GPU pool ended {flow_run.state}")
    return {"flow_run_id": str(flow_run.id), "state": flow_run.state.name}


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
