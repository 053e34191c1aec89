"""`cprec deploy`: create the work pools and register every deployment of deploy/prefect.yaml on
the Prefect server that PREFECT_API_URL names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cprec_core.artifacts import PROJECT_ROOT

WORK_POOLS = ("cprec-cpu", "cprec-gpu")


def prefect_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `prefect` CLI of this environment (argument list, no shell)."""
    exe = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "CPREC_HOME": str(PROJECT_ROOT)}
    return subprocess.run(
        [str(exe), "--no-prompt", *args],
        cwd=PROJECT_ROOT,
        env=env,
        check=check,
        text=True,
        capture_output=True,
    )


def deploy_all(prefect_yaml: Path) -> None:
    """Create (or keep) the process work pools, then deploy everything in `prefect_yaml`."""
    for pool in WORK_POOLS:
        created = prefect_cli("work-pool", "create", pool, "--type", "process", check=False)
        if created.returncode != 0 and "already exists" not in created.stdout + created.stderr:
            raise RuntimeError(f"creating work pool {pool} failed:\n{created.stdout}{created.stderr}")
    result = prefect_cli("deploy", "--all", "--prefect-file", str(prefect_yaml), check=False)
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
