"""cprec_core: the pure library behind the cprec pipeline (no Prefect imports here)."""

__version__ = "0.1.0"
