"""End to end with real parts: a local Prefect server, work pools, deployments from
deploy/prefect.yaml, a process worker, `prefect deployment run cprec/full-pipeline --watch`, then a
single-stage rerun whose upstream stages are cache hits. Every process is stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ("ingest", "behaviors", "corpus", "pack", "cpt", "finetune", "evaluate", "recommend")
STAGE_DEPLOYMENTS = ("ingest", "behaviors", "corpus", "cpt", "finetune", "evaluate", "recommend")
SMALL = [  # the demo, shrunk so that every stage runs in a few minutes on 2 cores
    "synth.n_users=150",
    "synth.n_items_per_domain=40",
    "synth.n_interactions=4000",
    "behaviors.k_core=2",
    "model.tiny.pretrain_steps=10",
    "cpt.max_steps=6",
    "cpt.checkpoint_every=3",
    "cpt.probe_max_docs=10",
    "finetune.max_epochs=2",
    "evaluate.seeds=[0]",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"prefect server at {url} not healthy after {timeout} s")


def stop(proc: subprocess.Popen, signals: int = 1) -> None:
    """SIGTERM the process group (`signals` times: a worker needs two), then SIGKILL if needed."""
    for _ in range(signals):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                continue
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture
def server(tmp_path: Path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "DO_NOT_TRACK": "1",
    }
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_healthy(api, proc)
            yield env
        finally:
            stop(proc)


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
    with open(tmp_path / "worker.log", "w") as worker_log:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "cprec-cpu", "--type", "process"],
            cwd=REPO,
            env={**env, "CPREC_HOME": str(REPO)},
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            first = cli(
                env, "deployment", "run", "cprec/full-pipeline", "--params", json.dumps(full), "--watch"
            )
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


def task_states_of_run(env: dict[str, str], run_output: str) -> dict[str, str]:
    """Task states of the flow run that `prefect deployment run` reported, read from the API."""
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run_output).group(1)
    code = (
        "import json, sys\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId\n"
        "with get_client(sync_client=True) as c:\n"
        "    f = FlowRunFilter(id=FlowRunFilterId(any_=[sys.argv[1]]))\n"
        "    trs = c.read_task_runs(flow_run_filter=f)\n"
        "    print(json.dumps({t.name.rsplit('-', 1)[0]: t.state.name for t in trs}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, flow_run_id], env=env, text=True, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


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
