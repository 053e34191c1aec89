"""Shared test set-up: offline, no telemetry, and small fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cprec_core.offline import apply_offline_defaults

# Set before any library import: nothing in the tests may reach a hub or send telemetry.
apply_offline_defaults(force=True)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def embedded_flow_runs():
    """Flow runs without heartbeats, as `cprec` runs them embedded (flows.cprec.embedded_runs): each
    would otherwise wait up to 1 s at its end. Tests with a server start it in other processes."""
    from flows.cprec import embedded_runs

    with embedded_runs(always=True):
        yield


@pytest.fixture
def shared_data() -> Path:
    """The real Amazon data beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One torch thread for the test: the numbers tests pin are then exactly repeatable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
