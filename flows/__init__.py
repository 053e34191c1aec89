"""Prefect flows, deployments and the `cprec` CLI: the one layer that imports both cprec_core and
Prefect.

Importing this package sets the offline/no-telemetry defaults of cprec_core.offline (each can
still be overridden from the environment).
"""

from cprec_core.offline import apply_offline_defaults

apply_offline_defaults()
