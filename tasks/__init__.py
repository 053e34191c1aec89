"""Prefect tasks of the cprec pipeline."""
