"""End to end with real parts: a local Prefect server, work pools, deployments from
deploy/prefect.yaml, a process worker, `prefect deployment run cprec/full-pipeline --watch`, then a
single-stage rerun whose upstream stages are cache hits. Every process is stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import BIN, REPO, SMALL, cli, start_worker, stop, task_states_of_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STAGES = ("ingest", "behaviors", "corpus", "pack", "cpt", "finetune", "evaluate", "recommend")
STAGE_DEPLOYMENTS = ("ingest", "behaviors", "corpus", "cpt", "finetune", "evaluate", "recommend")


def test_deployment_run_then_stage_rerun_hits_upstream_cache(server: dict[str, str], tmp_path: Path) -> None:
    env = server
    deployed = subprocess.run(
        [str(BIN / "cprec"), "deploy"], cwd=REPO, env=env, text=True, capture_output=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    listed = cli(env, "deployment", "ls")
    for name in (*STAGE_DEPLOYMENTS, "full-pipeline", "corpus-refresh"):
        assert name in listed.stdout, listed.stdout

    root = tmp_path / "run"
    overrides = [
        f"paths.root={root}",
        f"ingest.sources=[{{format: synthetic, path: {tmp_path / 'raw'}}}]",
        *SMALL,
    ]
    full = {"config": "configs/demo.yaml", "stages": "all", "overrides": overrides}
    worker = start_worker(env, "cprec-cpu", REPO, tmp_path / "worker.log")
    try:
        first = cli(env, "deployment", "run", "cprec/full-pipeline", "--params", json.dumps(full), "--watch")
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        assert json.loads((root / "gold" / "corpus" / "_manifest.json").read_text())["rows"] > 0
        assert (root / "reports" / "demo" / "report.md").is_file()
        assert task_states_of_run(env, first.stdout) == dict.fromkeys(STAGES, "Completed")

        rerun = {**full, "stages": "ingest,behaviors,corpus"}  # the corpus deployment, upstream included
        second = cli(env, "deployment", "run", "cprec/corpus", "--params", json.dumps(rerun), "--watch")
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        cached = dict.fromkeys(("ingest", "behaviors", "corpus"), "Cached")
        assert task_states_of_run(env, second.stdout) == cached
        served = cli(
            env,
            "deployment",
            "run",
            "cprec/recommend",
            "--params",
            json.dumps({**full, "stages": ["recommend"]}),
            "--watch",
        )
        assert served.returncode == 0, served.stdout[-4000:] + served.stderr[-4000:]
        assert task_states_of_run(env, served.stdout) == {"recommend": "Cached"}
        check_recommendations(root)
        refreshed = notify_and_wait_for_refresh(env, tmp_path, overrides)
        assert refreshed == "Completed"
        artifacts = cli(env, "artifact", "ls")
        for key in ("demo-validation-gold-corpus", "demo-cpt-summary", "demo-report"):
            assert key in artifacts.stdout, artifacts.stdout
    finally:
        stop(worker, signals=2)


def check_recommendations(root: Path) -> None:
    """Top-10 per user of the held-out domain, never an item of the user's history."""
    from cprec_core.artifacts import read_table
    from cprec_core.schema import GOLD_RECOMMENDATIONS, SILVER_EVENTS

    recs = read_table(GOLD_RECOMMENDATIONS, root / "serving" / "demo").to_pandas()
    events = read_table(SILVER_EVENTS, root).to_pandas()
    events = events[events.domain == "Grocery"]
    assert set(recs.domain) == {"Grocery"} and recs.user_id.nunique() == events.user_id.nunique()
    assert (recs.groupby("user_id")["rank"].max() == 10).all()
    seen = set(zip(events.user_id, events.item_id, strict=True))
    assert not any((u, i) in seen for u, i in zip(recs.user_id, recs.item_id, strict=True))


def notify_and_wait_for_refresh(env: dict[str, str], tmp_path: Path, overrides: list[str]) -> str:
    """`cprec notify-logs` emits cprec.logs.arrived; the trigger starts corpus-refresh on the config
    file the event names; return that flow run's final state (nothing changed: a quick no-op)."""
    import yaml

    from flows.cprec import resolve_config

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(resolve_config("configs/demo.yaml", overrides).model_dump(mode="json")))
    notified = subprocess.run(
        [str(BIN / "cprec"), "notify-logs", str(tmp_path / "raw"), "--config", str(config)],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert notified.returncode == 0, notified.stdout + notified.stderr
    code = (
        "import sys, time\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName\n"
        "with get_client(sync_client=True) as c:\n"
        "    f = DeploymentFilter(name=DeploymentFilterName(any_=['corpus-refresh']))\n"
        "    for _ in range(120):\n"
        "        runs = c.read_flow_runs(deployment_filter=f)\n"
        "        if runs and runs[0].state.is_final():\n"
        "            print(runs[0].state.name, runs[0].parameters.get('config')); break\n"
        "        time.sleep(1)\n"
        "    else:\n"
        "        print('none', len(runs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True, timeout=200)
    state, used = (out.stdout.strip().splitlines() or ["none"])[-1].split(" ", 1)
    assert used == str(config), out.stdout + out.stderr  # the trigger passed the event's config on
    return state
