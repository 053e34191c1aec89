"""Reading what the integration tests' flow runs reported to the Prefect API."""

from __future__ import annotations

import time
from typing import Any


def final_task_runs(task_run_filter: Any = None, flow_run_filter: Any = None, timeout: float = 30) -> list:
    """The task runs the filters select, once every one has reached a final state: task run states
    reach the API as events, after the flow call has returned."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(task_run_filter=task_run_filter, flow_run_filter=flow_run_filter)
            if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)
