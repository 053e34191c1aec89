"""cprec_core/rec/finetune.py and rec/train.py: the LLM recommender learns, is deterministic per seed,
reproduces the frozen mode exactly, resumes exactly, selects on valid, and reuses unchanged runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rec_fixtures import DOMAIN, NoTestMetrics, tiny_config, write_silver

from cprec_core.artifacts import read_table, verify
from cprec_core.paths import rec_dir
from cprec_core.rec.finetune import (
    choices_for,
    finetune_run,
    finetune_variant,
    load_runs,
    run_dir,
    select_on_valid,
)
from cprec_core.rec.train import Interrupted
from cprec_core.schema import REC_RANKS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: exact, repeatable numbers


def _ranks(out_dir: str) -> list[int]:
    return read_table(REC_RANKS, Path(out_dir)).column("rank").to_pylist()


def test_text_user_model_learns_the_cycle(silver_world: tuple[Path, Path, Path]) -> None:
    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=30, patience=30, lr=1e-2, temperature=0.2)
    res = finetune_variant(cfg, DOMAIN, "cpt", 0, cpt, base, run_dir(cfg, DOMAIN, "cpt", 0))
    # measured: test NDCG@10 0.968, valid curve 0.17 -> 0.94 in 30 epochs (popularity: 0.14)
    assert res["test"]["NDCG@10"] > 0.75
    assert res["curve"][-1]["valid_NDCG@10"] > res["curve"][0]["valid_NDCG@10"] + 0.4
    assert res["n_users"] == 40 and res["n_items"] == 30
    assert res["item_encoder"]["llm_hidden"] == 32
    verify(Path(res["out_dir"]), deep=True)


def test_same_seed_same_result_other_seed_differs(
    silver_world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=3, patience=3)
    a = finetune_variant(cfg, DOMAIN, "base", 0, cpt, base, tmp_path / "a")
    b = finetune_variant(cfg, DOMAIN, "base", 0, cpt, base, tmp_path / "b")
    c = finetune_variant(cfg, DOMAIN, "base", 1, cpt, base, tmp_path / "c")
    assert a["curve"] == b["curve"] and _ranks(a["out_dir"]) == _ranks(b["out_dir"])
    assert a["curve"] != c["curve"]


def test_early_stopping_keeps_the_best_epoch(silver_world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=30, patience=1, lr=1e-2)
    res = finetune_variant(cfg, DOMAIN, "sasrec", 0, cpt, base, tmp_path / "s")
    curve = [c["valid_NDCG@10"] for c in res["curve"]]
    best = max(curve)
    # stopped one epoch after the best (patience 1), and the saved ranks are the best epoch's
    assert res["epochs_run"] == res["best_epoch"] + 1 == curve.index(best) + 2
    assert res["valid"]["NDCG@10"] == pytest.approx(best)


def test_finetune_run_reuses_unchanged_runs(silver_world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, cpt, base = silver_world
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
    silver_world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, cpt, _ = silver_world
    cfg = tiny_config(root)
    with pytest.raises(ValueError, match="variant 'base' needs the base model directory"):
        finetune_variant(cfg, DOMAIN, "base", 0, cpt, None, tmp_path / "x")
    with pytest.raises(ValueError, match="variant 'bpr': expected one of"):
        finetune_variant(cfg, DOMAIN, "bpr", 0, cpt, None, tmp_path / "x")


# Measured on the code before the trained encoder modes existed (commit 3c543a7), same fixture,
# tiny_config(max_epochs=4, patience=4), seed 0, one thread: frozen + no item ids must give these.
BEFORE = {
    "cpt": ([7.059552510579427, 3.487151622772217, 3.032092014948527, 2.653167804082235], 0.7320519065983252),
    "base": (
        [7.324691454569499, 3.428191900253296, 3.0447515646616616, 2.6219399770100913],
        0.6728351577374964,
    ),
    "sasrec": ([3.3164518674214682, 2.9091699918111167, 2.589399496714274, 2.269832134246826], 1.0),
}
BEFORE_RANK_SUMS = {"cpt": 157, "base": 160, "sasrec": 1}  # over the 80 valid + test ranks


@pytest.mark.parametrize("variant", ["cpt", "base", "sasrec"])
def test_frozen_without_item_ids_reproduces_the_earlier_results(
    silver_world: tuple[Path, Path, Path], tmp_path: Path, variant: str
) -> None:
    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=4, patience=4)
    assert cfg.finetune.encoder_mode == "frozen" and not cfg.finetune.item_id_embedding
    res = finetune_variant(cfg, DOMAIN, variant, 0, cpt, base, tmp_path / variant)
    losses, test_ndcg = BEFORE[variant]
    assert [c["train_loss"] for c in res["curve"]] == pytest.approx(losses, rel=1e-6)
    assert res["test"]["NDCG@10"] == pytest.approx(test_ndcg, rel=1e-9)
    assert sum(_ranks(res["out_dir"])) == BEFORE_RANK_SUMS[variant]


@pytest.mark.parametrize("variant", ["cpt-top", "sasrec"])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(
    silver_world: tuple[Path, Path, Path], tmp_path: Path, variant: str
) -> None:
    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=5, patience=5, dropout=0.1, variants=[variant])
    whole = finetune_variant(cfg, DOMAIN, variant, 0, cpt, base, tmp_path / "whole")
    with pytest.raises(Interrupted):
        finetune_variant(cfg, DOMAIN, variant, 0, cpt, base, tmp_path / "resumed", stop_after_epochs=2)
    work = list((rec_dir(cfg) / ".work" / DOMAIN / variant).glob("seed=0-*/epoch0002"))
    assert len(work) == 1 and not (tmp_path / "resumed").exists()  # a sealed epoch, no run output yet
    resumed = finetune_variant(cfg, DOMAIN, variant, 0, cpt, base, tmp_path / "resumed")
    assert [c["train_loss"] for c in resumed["curve"]] == [c["train_loss"] for c in whole["curve"]]
    assert _ranks(resumed["out_dir"]) == _ranks(whole["out_dir"])
    assert not work[0].parent.exists()  # checkpoints are removed once the run is saved


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(
    silver_world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=4, patience=4, variants=["sasrec"])
    whole = finetune_variant(cfg, DOMAIN, "sasrec", 1, cpt, base, tmp_path / "whole")
    with pytest.raises(Interrupted):
        finetune_variant(cfg, DOMAIN, "sasrec", 1, cpt, base, tmp_path / "r", stop_after_epochs=1)
    (good,) = (rec_dir(cfg) / ".work" / DOMAIN / "sasrec").glob("seed=1-*/epoch0001")
    import shutil

    shutil.copytree(good, good.with_name("epoch0002"))  # a "newer" checkpoint whose bytes are wrong
    weights = good.with_name("epoch0002") / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    resumed = finetune_variant(cfg, DOMAIN, "sasrec", 1, cpt, base, tmp_path / "r")
    assert _ranks(resumed["out_dir"]) == _ranks(whole["out_dir"])


def test_finetune_without_a_cpt_checkpoint_names_it_and_the_stage(tmp_path: Path) -> None:
    from cprec_core.artifacts import ArtifactError

    cfg = tiny_config(tmp_path, variants=["popularity", "cpt"])
    missing = tmp_path / "models" / "cpt" / "t"
    with pytest.raises(ArtifactError) as err:
        finetune_run(cfg, missing, None)
    assert str(err.value) == (
        f"{missing}: no CPT checkpoint for variant 'cpt' (missing or incomplete): run the cpt stage first"
    )
    assert not rec_dir(cfg).exists()  # it failed before training anything


def test_selection_reads_valid_only() -> None:
    tried = [
        ({"item_pooling": "mean"}, NoTestMetrics(valid={"NDCG@10": 0.30}, test={"NDCG@10": 0.9})),
        ({"item_pooling": "layers"}, NoTestMetrics(valid={"NDCG@10": 0.35}, test={"NDCG@10": 0.1})),
        ({"item_pooling": "last"}, NoTestMetrics(valid={"NDCG@10": 0.35}, test={"NDCG@10": 0.2})),
    ]
    assert select_on_valid(tried) == {"item_pooling": "layers"}  # best valid; the first of a tie


def test_choices_apply_per_variant(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        variants=["cpt-top", "cpt-frozen", "sasrec", "popularity"],
        select={"item_pooling": ["mean", "item_token"], "llm_lr": [1e-4, 1e-3]},
    )
    assert len(choices_for(cfg, "cpt-top")) == 4
    assert choices_for(cfg, "cpt-frozen") == [{"item_pooling": "mean"}]  # no item token, no LLM LR
    assert choices_for(cfg, "sasrec") == [{}] and choices_for(cfg, "popularity") == [{}]


def test_finetune_run_selects_on_valid_then_runs_every_seed_with_the_choice(
    silver_world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, cpt, base = silver_world
    write_silver(tmp_path)
    cfg = tiny_config(
        tmp_path, max_epochs=2, variants=["cpt-top", "popularity"], select={"item_pooling": ["mean", "last"]}
    )
    cfg.evaluate.seeds = [0, 1]
    out = finetune_run(cfg, cpt, base)
    record = out["selection"][DOMAIN]["cpt-top"]
    scores = {c["choice"]["item_pooling"]: c["valid"] for c in record["candidates"]}
    best = max(scores, key=lambda k: (scores[k], k == "mean"))
    assert record["chosen"] == {"item_pooling": best}
    kept = [r for r in out["runs"] if r["variant"] == "cpt-top"]
    assert [r["seed"] for r in kept] == [0, 1] and all(r["choice"] == record["chosen"] for r in kept)
    assert out["trained"] == 2 + 1 + 2  # two candidates at seed 0, the choice at seed 1, popularity x 2
    listed = load_runs(cfg)
    assert sorted((r["variant"], r["seed"]) for r in listed["runs"]) == sorted(
        (r["variant"], r["seed"]) for r in out["runs"]
    )
    # what evaluate reads names the choice each kept run was trained with (the report's column)
    assert all(r["choice"] == record["chosen"] for r in listed["runs"] if r["variant"] == "cpt-top")
    assert finetune_run(cfg, cpt, base)["trained"] == 0


def test_llm_warmup_holds_the_llm_to_patience_then_trains_it_too(
    silver_world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from cprec_core.rec.build import build_recommender
    from cprec_core.rec.data import load_domain

    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=3, patience=3, variants=["cpt-full"], lr=1e-2, llm_lr=1e-3)
    res = finetune_variant(cfg, DOMAIN, "cpt-full", 2, cpt, base, tmp_path / "whole")
    assert [c["phase"] for c in res["curve"]] == [1, 1, 1, 2, 2, 2]  # each phase to its own cap
    with pytest.raises(Interrupted):  # stop at the end of the held phase and look at its weights
        finetune_variant(cfg, DOMAIN, "cpt-full", 2, cpt, base, tmp_path / "r", stop_after_epochs=3)
    (epoch3,) = (rec_dir(cfg) / ".work" / DOMAIN / "cpt-full").glob("seed=2-*/epoch0003")
    held = load_file(epoch3 / "weights.safetensors")
    fresh = dict(
        build_recommender(cfg, load_domain(root, DOMAIN), "cpt-full", cpt, torch.device("cpu"))[
            0
        ].named_parameters()
    )
    llm = [k for k in held if k.startswith("items.llm.decoder.")]
    assert llm and all(torch.equal(held[k], fresh[k]) for k in llm)  # the LLM was read, not trained
    assert not torch.equal(held["items.adapter.1.weight"], fresh["items.adapter.1.weight"])
    resumed = finetune_variant(cfg, DOMAIN, "cpt-full", 2, cpt, base, tmp_path / "r")
    assert [c["train_loss"] for c in resumed["curve"]] == [c["train_loss"] for c in res["curve"]]
    final = load_file(Path(resumed["out_dir"]) / "model.safetensors")
    if res["best_epoch"] > 3:  # the best epoch trained the LLM: its weights moved
        assert any(not torch.equal(final[k], fresh[k]) for k in llm)


def test_llm_max_epochs_bounds_only_the_epochs_in_which_the_llm_trains(
    silver_world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, cpt, base = silver_world
    phases = {}
    for name, variant, extra in [
        ("warm", "cpt-top", {}),
        ("cold", "cpt-top", {"llm_warmup": False}),
        ("frozen", "cpt", {}),
    ]:
        cfg = tiny_config(root, max_epochs=3, patience=3, llm_max_epochs=1, variants=[variant], **extra)
        res = finetune_variant(cfg, DOMAIN, variant, 0, cpt, base, tmp_path / name)
        phases[name] = [c.get("phase", 0) for c in res["curve"]]
        assert res["llm_max_epochs"] == 1
    # the held phase and a frozen LLM keep max_epochs; only the LLM-training epochs are capped
    assert phases == {"warm": [1, 1, 1, 2], "cold": [0], "frozen": [0, 0, 0]}


def test_a_variant_may_run_at_its_own_seeds(silver_world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, cpt, base = silver_world
    write_silver(tmp_path)
    cfg = tiny_config(
        tmp_path, max_epochs=1, variants=["sasrec", "popularity"], variant_seeds={"sasrec": [1]}
    )
    cfg.evaluate.seeds = [0, 1]
    out = finetune_run(cfg, cpt, base)
    assert sorted((r["variant"], r["seed"]) for r in out["runs"]) == [
        ("popularity", 0),
        ("popularity", 1),
        ("sasrec", 1),
    ]
    assert len(load_runs(cfg)["runs"]) == 3


def test_a_softmax_over_the_catalogue_trains_the_text_recommender(
    silver_world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, cpt, base = silver_world
    cfg = tiny_config(
        root, max_epochs=8, patience=8, lr=1e-2, temperature=0.2, loss="softmax", variants=["cpt-top"]
    )
    res = finetune_variant(cfg, DOMAIN, "cpt-top", 0, cpt, base, tmp_path / "softmax")
    curve = [c["valid_NDCG@10"] for c in res["curve"]]
    assert max(curve) > curve[0] + 0.2 and res["test"]["NDCG@10"] > 0.5
