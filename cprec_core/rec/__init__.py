"""Downstream recommenders and baselines."""
