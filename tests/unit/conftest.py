"""Fixtures shared by the recommender unit tests: two tiny LLMs and a run root with silver data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different tiny LLMs (cpt: seed 1, base: seed 2) on one BPE, built once a session.

    Shared safely: tests only read these directories (caches and runs go under their run roots).
    """
    from rec_fixtures import build_tiny_lm, corpus_texts

    lm = tmp_path_factory.mktemp("lm")
    cpt = build_tiny_lm(lm / "cpt", corpus_texts(), seed=1)
    return cpt, build_tiny_lm(lm / "base", corpus_texts(), seed=2)


@pytest.fixture(scope="module")
def silver_world(
    tmp_path_factory: pytest.TempPathFactory, tiny_lms: tuple[Path, Path]
) -> tuple[Path, Path, Path]:
    """(run root with cyclic silver data, cpt LLM, base LLM); each test module gets its own root,
    since its tests write runs into it."""
    from rec_fixtures import write_silver

    root = tmp_path_factory.mktemp("root")
    write_silver(root)
    return (root, *tiny_lms)
