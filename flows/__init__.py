"""Prefect flows, deployments and the `cprec` CLI: the one layer that imports both cprec_core and
Prefect.

Importing this package sets offline/no-telemetry defaults (each can still be overridden from the
environment): nothing reaches a model hub, and Prefect's ephemeral server gets enough time to
start on a loaded 2-core machine (STACK-NOTES).
"""

import os

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)
