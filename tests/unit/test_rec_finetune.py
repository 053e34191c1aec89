"""cprec_core/rec/finetune.py: the cpt/base user model learns, is deterministic per seed, and
unchanged runs are reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rec_fixtures import DOMAIN, build_tiny_lm, corpus_texts, tiny_config, write_silver

from cprec_core.artifacts import read_table, verify
from cprec_core.rec.finetune import finetune_run, finetune_variant, run_dir
from cprec_core.schema import REC_RANKS


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A run root with cyclic silver data, and two different tiny LLMs (cpt, base)."""
    root = tmp_path_factory.mktemp("root")
    write_silver(root)
    cpt = build_tiny_lm(root / "lm" / "cpt", corpus_texts(), seed=1)
    base = build_tiny_lm(root / "lm" / "base", corpus_texts(), seed=2)
    return root, cpt, base


def _ranks(out_dir: str) -> list[int]:
    return read_table(REC_RANKS, Path(out_dir)).column("rank").to_pylist()


def test_text_user_model_learns_the_cycle(world: tuple[Path, Path, Path]) -> None:
    root, cpt, base = world
    cfg = tiny_config(root, max_epochs=30, patience=30, lr=1e-2, temperature=0.2)
    res = finetune_variant(cfg, DOMAIN, "cpt", 0, cpt, base, run_dir(cfg, DOMAIN, "cpt", 0))
    # measured: test NDCG@10 0.968, valid curve 0.17 -> 0.94 in 30 epochs (popularity: 0.14)
    assert res["test"]["NDCG@10"] > 0.75
    assert res["curve"][-1]["valid_NDCG@10"] > res["curve"][0]["valid_NDCG@10"] + 0.4
    assert res["n_users"] == 40 and res["n_items"] == 30
    assert res["item_encoder"]["llm_hidden"] == 32
    verify(Path(res["out_dir"]), deep=True)


def test_same_seed_same_result_other_seed_differs(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, cpt, base = world
    cfg = tiny_config(root, max_epochs=3, patience=3)
    a = finetune_variant(cfg, DOMAIN, "base", 0, cpt, base, tmp_path / "a")
    b = finetune_variant(cfg, DOMAIN, "base", 0, cpt, base, tmp_path / "b")
    c = finetune_variant(cfg, DOMAIN, "base", 1, cpt, base, tmp_path / "c")
    assert a["curve"] == b["curve"] and _ranks(a["out_dir"]) == _ranks(b["out_dir"])
    assert a["curve"] != c["curve"]


def test_early_stopping_keeps_the_best_epoch(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, cpt, base = world
    cfg = tiny_config(root, max_epochs=30, patience=1, lr=1e-2)
    res = finetune_variant(cfg, DOMAIN, "sasrec", 0, cpt, base, tmp_path / "s")
    curve = [c["valid_NDCG@10"] for c in res["curve"]]
    best = max(curve)
    # stopped one epoch after the best (patience 1), and the saved ranks are the best epoch's
    assert res["epochs_run"] == res["best_epoch"] + 1 == curve.index(best) + 2
    assert res["valid"]["NDCG@10"] == pytest.approx(best)


def test_finetune_run_reuses_unchanged_runs(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, cpt, base = world
    write_silver(tmp_path)
    cfg = tiny_config(tmp_path, max_epochs=2, variants=["cpt", "popularity"])
    first = finetune_run(cfg, cpt, base)
    assert (first["trained"], first["reused"]) == (2, 0)
    again = finetune_run(cfg, cpt, base)
    assert (again["trained"], again["reused"]) == (0, 2)
    assert [r["test"] for r in again["runs"]] == [r["test"] for r in first["runs"]]
    verify(Path(first["rec_dir"]))  # the stage directory is complete, with its manifest
    # the whole finetune section is part of every run's key: another learning rate reruns both
    other = tiny_config(tmp_path, max_epochs=2, lr=2e-3, variants=["cpt", "popularity"])
    assert finetune_run(other, cpt, base)["trained"] == 2


def test_missing_model_dir_and_unknown_variant_fail_clearly(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, cpt, _ = world
    cfg = tiny_config(root)
    with pytest.raises(ValueError, match="variant 'base' needs the base model directory"):
        finetune_variant(cfg, DOMAIN, "base", 0, cpt, None, tmp_path / "x")
    with pytest.raises(ValueError, match="unknown variant 'bpr'"):
        finetune_variant(cfg, DOMAIN, "bpr", 0, cpt, None, tmp_path / "x")
