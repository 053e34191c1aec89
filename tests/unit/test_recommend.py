"""cprec_core/recommend.py: top-K outside the history, the model chosen on valid, reloaded exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rec_fixtures import DOMAIN, NoTestMetrics, tiny_config

from cprec_core.artifacts import model_fingerprint, read_table, verify
from cprec_core.paths import serving_dir
from cprec_core.rec.data import load_domain
from cprec_core.rec.finetune import finetune_run
from cprec_core.rec.ranking import rank_users
from cprec_core.recommend import (
    RecommendError,
    build_recommendations,
    choose_run,
    full_histories,
    read_sessions,
    recommend_sessions,
    scorer,
    top_k,
)
from cprec_core.schema import GOLD_RECOMMENDATIONS, REC_RANKS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: exact, repeatable numbers


def test_top_k_skips_the_history_breaks_ties_by_index_and_pads_when_items_run_out() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    items, values = top_k(lambda hist: scores[: len(hist)], [np.array([1]), np.array([0, 1, 2, 3])], 5, 3)
    # user 0: 0.9 (item 1) is history; then items 2 and 3 tie at 0.5 (lower index first), then item 0
    assert items[0].tolist() == [2, 3, 0] and values[0].tolist() == [0.5, 0.5, 0.1]
    # user 1 has seen 4 of 5 items: one real recommendation, then padding
    assert items[1].tolist() == [4, -1, -1] and values[1, 0] == 5.0 and np.isinf(values[1, 1:]).all()


def test_the_served_run_is_the_best_variant_on_valid_then_its_best_seed() -> None:
    def run(variant: str, seed: int, valid: float) -> NoTestMetrics:
        return NoTestMetrics(
            domain="D", variant=variant, seed=seed, valid={"NDCG@10": valid}, test={"NDCG@10": 1}
        )

    runs = [run("cpt", 0, 0.30), run("cpt", 1, 0.34), run("sasrec", 0, 0.40), run("sasrec", 1, 0.20)]
    # mean valid: cpt 0.32 > sasrec 0.30, although sasrec has the single best seed
    assert (choose_run(runs, "D", "best")["variant"], choose_run(runs, "D", "best")["seed"]) == ("cpt", 1)
    assert choose_run(runs, "D", "sasrec")["seed"] == 0
    with pytest.raises(RecommendError, match="recommend.variant='base': no finetune run"):
        choose_run(runs, "D", "base")


@pytest.fixture(scope="module")
def trained(silver_world: tuple[Path, Path, Path]) -> tuple:
    root, cpt, base = silver_world
    cfg = tiny_config(root, max_epochs=3, variants=["cpt-top", "sasrec", "popularity"], lr=1e-2)
    cfg.evaluate.seeds = [0, 1]
    finetune_run(cfg, cpt, base)
    return cfg, cpt, base


def test_a_reloaded_model_scores_exactly_as_it_did_in_finetune(trained: tuple) -> None:
    from cprec_core.rec.finetune import load_runs

    cfg, cpt, base = trained
    data = load_domain(cfg.root, DOMAIN)
    for run in load_runs(cfg)["runs"]:
        saved = read_table(REC_RANKS, Path(run["out_dir"])).to_pandas()
        valid = saved[saved.split == "valid"]["rank"].tolist()
        assert rank_users(scorer(cfg, run, data, cpt, base), data, "valid").tolist() == valid, run["variant"]


def test_recommendations_are_top_k_outside_each_whole_history(trained: tuple) -> None:
    cfg, cpt, base = trained
    cfg.recommend.top_k = 5
    out = build_recommendations(cfg, cpt, base)
    verify(GOLD_RECOMMENDATIONS.path(serving_dir(cfg)), deep=True)
    recs = read_table(GOLD_RECOMMENDATIONS, serving_dir(cfg)).to_pandas()
    data = load_domain(cfg.root, DOMAIN)
    assert len(recs) == 5 * data.n_users
    assert all(ranks == [1, 2, 3, 4, 5] for ranks in recs.groupby("user_id")["rank"].apply(list))
    served = out["served"][DOMAIN]
    assert set(recs.variant) == {served["variant"]} and served["valid_NDCG@10"] > 0
    for u, history in zip(data.user_ids, full_histories(data), strict=True):
        mine = recs[recs.user_id == u]
        assert not set(mine.item_id) & {data.item_ids[i] for i in history}  # valid and test items too
        assert mine.score.is_monotonic_decreasing
    # a session equal to a user's whole history gets that user's recommendations
    u = 3
    session = [data.item_ids[i] for i in full_histories(data)[u]]
    (again,) = recommend_sessions(cfg, DOMAIN, [session], cpt, base, k=5)
    assert [i for i, _ in again] == recs[recs.user_id == data.user_ids[u]].item_id.tolist()
    with pytest.raises(RecommendError, match="session 0: item 'nope' is not in Grocery's catalogue"):
        recommend_sessions(cfg, DOMAIN, [["nope"]], cpt, base)


def test_sessions_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"items": ["a", "b"]}\n\n{"items": "a"}\n')
    with pytest.raises(RecommendError, match=r"s.jsonl line 3: expected"):
        read_sessions(path)
    path.write_text('{"items": ["a", 7]}\n{oops\n')
    with pytest.raises(RecommendError, match=r"s.jsonl line 2: not JSON"):
        read_sessions(path)
    path.write_text('{"items": ["a", 7]}\n')
    assert read_sessions(path) == [["a", "7"]]


def test_the_served_model_is_known_by_its_runs_model_fingerprint(trained: tuple) -> None:
    cfg, cpt, base = trained
    served = build_recommendations(cfg, cpt, base)["served"][DOMAIN]
    recs = read_table(GOLD_RECOMMENDATIONS, serving_dir(cfg)).to_pandas()
    run_dir = Path(served["run_dir"])
    # a run dir is cprec-written: its model fingerprint is its manifest's (weights, adapters, ranks)
    assert served["model_fingerprint"] == model_fingerprint(run_dir) == verify(run_dir).fingerprint
    assert set(recs.model_fingerprint) == {served["model_fingerprint"]}
