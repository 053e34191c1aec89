"""The hand-off to the GPU pool, end to end: two process workers, one per pool, each in its own
working directory (the GPU one in a copy of the checkout, as on another node). With
`orchestration.gpu_pool` set, `cprec/full-pipeline` (on the CPU pool) hands pack + cpt and finetune
to their deployments on the GPU pool and waits; the outputs equal an in-process run's; a child that
fails fails the parent with the child's error line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from server_harness import BIN, REPO, SMALL, api, cli, flow_run_id, start_worker, stop

from cprec_core.artifacts import read_table
from cprec_core.schema import REPORT_METRICS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHILD_RUNS = """
import json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
with get_client(sync_client=True) as c:
    parent = c.read_flow_run(sys.argv[1])
    children = c.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[sys.argv[1]]))
    )
    print(json.dumps({
        "parent": {"state": parent.state.name, "message": parent.state.message,
                   "end": parent.end_time.isoformat() if parent.end_time else None},
        "children": [
            {"id": str(r.id), "pool": r.work_pool_name, "stages": r.parameters.get("stages"),
             "config_is_mapping": isinstance(r.parameters.get("config"), dict),
             "state": r.state.name, "end": r.end_time.isoformat() if r.end_time else None}
            for r in children
        ],
    }))
"""


def gpu_node_checkout(tmp_path: Path) -> Path:
    """A second checkout of the same code, as a GPU node would have at another path."""
    home = tmp_path / "gpu-node" / "cprec"
    ignore = shutil.ignore_patterns(".venv", "var", ".git", "build", "*.egg-info", "__pycache__", ".*cache")
    shutil.copytree(REPO, home, ignore=ignore)
    return home


def test_full_pipeline_hands_gpu_stages_to_the_gpu_pool(server: dict[str, str], tmp_path: Path) -> None:
    env = server
    deployed = subprocess.run(
        [str(BIN / "cprec"), "deploy"], cwd=REPO, env=env, text=True, capture_output=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    data = [f"ingest.sources=[{{format: synthetic, path: {tmp_path / 'raw'}}}]", *SMALL]
    pooled = [f"paths.root={tmp_path / 'pooled'}", "orchestration.gpu_pool=cprec-gpu", *data]

    local = subprocess.run(  # the reference: the same config in one process, no pool
        [str(BIN / "cprec"), "run", "--config", "configs/demo.yaml"]
        + [a for o in [f"paths.root={tmp_path / 'local'}", *data] for a in ("--set", o)],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=900,
    )
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]

    gpu_home = gpu_node_checkout(tmp_path)
    cpu_worker = start_worker(env, "cprec-cpu", REPO, tmp_path / "cpu-worker.log")
    gpu_worker = start_worker(env, "cprec-gpu", gpu_home, tmp_path / "gpu-worker.log")
    try:
        full = {"config": "configs/demo.yaml", "stages": "all", "overrides": pooled}
        run = cli(env, "deployment", "run", "cprec/full-pipeline", "--params", json.dumps(full), "--watch")
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        seen = api(env, CHILD_RUNS, flow_run_id(run.stdout))
        assert all(c["pool"] == "cprec-gpu" and c["state"] == "Completed" for c in seen["children"]), seen
        children = sorted(seen["children"], key=lambda c: c["end"])
        assert [c["stages"] for c in children] == [["pack", "cpt"], ["finetune"]], children
        assert all(c["config_is_mapping"] for c in children), children  # not a path the node resolves
        assert seen["parent"]["state"] == "Completed" and seen["parent"]["end"] >= children[-1]["end"]
        gpu_log = (tmp_path / "gpu-worker.log").read_text()
        cpu_log = (tmp_path / "cpu-worker.log").read_text()
        for child in children:  # the GPU pool's worker ran them, the CPU pool's did not
            assert child["id"] in gpu_log and child["id"] not in cpu_log

        # the same outputs as the in-process run: data exactly, models and metrics to float noise
        for artifact in ("gold/packed", "silver/events"):
            fingerprint = [
                json.loads((tmp_path / r / artifact / "_manifest.json").read_text())["fingerprint"]
                for r in ("pooled", "local")
            ]
            assert fingerprint[0] == fingerprint[1], artifact
        cpt = [
            json.loads((tmp_path / r / "models" / "cpt" / "demo" / "summary.json").read_text())
            for r in ("pooled", "local")
        ]
        assert cpt[0]["final_loss"] == pytest.approx(cpt[1]["final_loss"], rel=1e-5)
        metrics = [
            read_table(REPORT_METRICS, tmp_path / r / "reports" / "demo")
            .to_pandas()
            .set_index(["domain", "variant", "seed", "split", "protocol", "metric"])["value"]
            .sort_index()
            for r in ("pooled", "local")
        ]
        assert metrics[0].to_numpy() == pytest.approx(metrics[1].to_numpy(), rel=1e-4, abs=1e-6)

        # a child that fails fails its parent, with the child's error line
        broken = {**full, "stages": "pack,cpt", "overrides": [*pooled, f"model.path={tmp_path / 'no-model'}"]}
        params = json.dumps(broken)
        failed = cli(env, "deployment", "run", "cprec/full-pipeline", "--params", params, "--watch")
        seen = api(env, CHILD_RUNS, flow_run_id(failed.stdout))
        assert failed.returncode != 0 and seen["parent"]["state"] == "Failed", seen
        assert [c["state"] for c in seen["children"]] == ["Failed"], seen
        assert f"model.path={tmp_path / 'no-model'}: does not exist" in seen["parent"]["message"], seen
    finally:
        stop(cpu_worker, signals=2)
        stop(gpu_worker, signals=2)
