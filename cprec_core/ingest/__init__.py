"""Readers for raw behaviour logs → bronze Parquet."""
