"""Helpers of the e2e tests: a real Prefect server, its CLI, processes stopped by process group."""

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

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
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


def start_worker(env: dict[str, str], pool: str, home: Path, log: Path) -> subprocess.Popen:
    """A process worker for `pool`; its flow runs work in `home` (the deployments' pull step)."""
    return subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        cwd=home,
        env={**env, "CPREC_HOME": str(home)},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def flow_run_id(run_output: str) -> str:
    """The flow run that `prefect deployment run` reported."""
    return re.search(r"UUID: ([0-9a-f-]{36})", run_output).group(1)


def api(env: dict[str, str], code: str, *args: str) -> object:
    """Run `code` (which prints one JSON line last) against the server's API; return that value."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, text=True, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def task_states_of_run(env: dict[str, str], run_output: str) -> dict[str, str]:
    """Task states of the flow run that `prefect deployment run` reported, read from the API."""
    code = (
        "import json, sys\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId\n"
        "with get_client(sync_client=True) as c:\n"
        "    f = FlowRunFilter(id=FlowRunFilterId(any_=[sys.argv[1]]))\n"
        "    trs = c.read_task_runs(flow_run_filter=f)\n"
        "    print(json.dumps({t.name.rsplit('-', 1)[0]: t.state.name for t in trs}))\n"
    )
    return api(env, code, flow_run_id(run_output))
