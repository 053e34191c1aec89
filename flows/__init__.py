"""Prefect flows of the cprec pipeline."""
