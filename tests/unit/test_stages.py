"""cprec_core/stages.py is the one list of stages: the flow's tasks and deploy/prefect.yaml follow it."""

from __future__ import annotations

from pathlib import Path

import yaml

from cprec_core.stages import REFRESHED, SPECS, STAGES, gpu_deployment
from flows.cprec import TASKS, stage_groups
from flows.deploy import WORK_POOLS

ROOT = Path(__file__).resolve().parents[2]


def deployments() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_every_stage_has_its_deployment_on_its_pool_running_exactly_its_group() -> None:
    deployed = deployments()
    for stage in STAGES:
        spec = SPECS[stage]
        d = deployed[spec.deployment_name]
        group = [s for s in STAGES if SPECS[s].deployment_name == spec.deployment_name]
        assert d["parameters"]["stages"] == group, stage
        assert d["work_pool"]["name"] == f"cprec-{spec.pool}", stage
        assert d["entrypoint"] == "flows/cprec.py:cprec"
    assert {d["work_pool"]["name"] for d in deployed.values()} == set(WORK_POOLS)
    # the whole pipeline and the refresh are the only deployments that are not a stage's
    assert set(deployed) - {SPECS[s].deployment_name for s in STAGES} == {"full-pipeline", "corpus-refresh"}


def test_the_flow_runs_each_stage_through_the_task_of_its_name() -> None:
    assert list(TASKS) == list(STAGES)
    assert all(task.name == stage for stage, task in TASKS.items())


def test_gpu_stages_group_by_deployment_only_with_a_gpu_pool(tmp_path) -> None:
    from cprec_core.config import load_config

    cfg = load_config(None, [f"paths.root={tmp_path}"])
    pooled = cfg.model_copy(update={"orchestration": cfg.orchestration.model_copy(update={"gpu_pool": "g"})})
    assert stage_groups(list(STAGES), cfg) == [[s] for s in STAGES]
    assert stage_groups(list(STAGES), pooled) == [
        ["ingest"],
        ["behaviors"],
        ["corpus"],
        ["pack", "cpt"],
        ["finetune"],
        ["evaluate"],
        ["recommend"],
    ]
    assert [s for s in STAGES if gpu_deployment(s)] == ["pack", "cpt", "finetune"]
    assert REFRESHED == ("ingest", "behaviors", "corpus")
