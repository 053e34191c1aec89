"""The environment every cprec process runs with: offline (nothing reaches a model hub), no
telemetry, and enough time for Prefect's ephemeral server to start on a loaded 2-core machine
(STACK-NOTES). One list, used by the flows package, the tests and the benchmarks."""

from __future__ import annotations

import os

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_defaults(force: bool = False) -> None:
    """Set OFFLINE_ENV in os.environ (only where unset, unless `force`)."""
    for key, value in OFFLINE_ENV.items():
        if force:
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
