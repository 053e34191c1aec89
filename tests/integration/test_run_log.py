"""The library's own log records (cprec_core.*, the CPT launcher's cprec.*) reach the Prefect run log
of the stage that logged them, so a run on a worker shows them, not only a terminal."""

from __future__ import annotations

import logging
import warnings
from uuid import UUID

from tasks.common import library_logs_to_run_log


def test_library_records_reach_the_run_log_and_stay_quiet_outside_a_run(prefect_harness) -> None:
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.context import TaskRunContext
    from prefect.logging.handlers import APILogHandler

    @task
    def sweep() -> UUID:
        library_logs_to_run_log()
        library_logs_to_run_log()  # idempotent: a second stage in the process adds no second handler
        logging.getLogger("cprec_core.locks").info("removed 3 leftovers of an interrupted run")
        logging.getLogger("cprec.cpt").info("launching: deepspeed train.py")
        logging.getLogger("cprec_core.locks").debug("below INFO: stays out of the run log")
        context = TaskRunContext.get()
        assert context is not None
        return context.task_run.id

    @flow
    def stage() -> UUID:
        return sweep()

    task_run_id = stage()
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])))
    messages = [log.message for log in logs]
    assert "removed 3 leftovers of an interrupted run" in messages
    assert "launching: deepspeed train.py" in messages
    assert messages.count("removed 3 leftovers of an interrupted run") == 1
    assert not any("below INFO" in m for m in messages)
    handlers = [h for h in logging.getLogger("cprec_core").handlers if isinstance(h, APILogHandler)]
    assert len(handlers) == 1

    with warnings.catch_warnings():  # outside any run: no "missing flow run" warning, no error
        warnings.simplefilter("error")
        logging.getLogger("cprec_core.locks").info("a library call outside Prefect")
