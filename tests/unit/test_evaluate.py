"""cprec_core/evaluate.py: seeds aggregated, paired significance, report written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from rec_fixtures import DOMAIN, build_tiny_lm, corpus_texts, tiny_config, write_silver

from cprec_core.artifacts import ArtifactError, read_table, verify
from cprec_core.evaluate import claim_line, evaluate_run, holm, significance, significance_table
from cprec_core.rec.finetune import finetune_run
from cprec_core.schema import REPORT_METRICS, REPORT_PER_USER


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_holm_on_a_hand_case() -> None:
    # p = [0.01, 0.04, 0.03], m = 3; sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, .04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_significance_averages_seeds_per_user_then_pairs_users() -> None:
    # 6 users; cpt's NDCG@10 is the seed mean (0.5, 0.7) = 0.6 for every user, base's 0.1 * user index
    rows = []
    for u in range(6):
        rows += [(DOMAIN, "cpt", s, f"u{u}", 0, v) for s, v in ((0, 0.5), (1, 0.7))]
        rows += [(DOMAIN, "base", s, f"u{u}", 0, 0.1 * u) for s in (0, 1)]
    per_user = pd.DataFrame(rows, columns=REPORT_PER_USER.schema.names)
    tests = significance(per_user, DOMAIN, ["cpt", "base"], "wilcoxon")
    t = tests["base"]
    # differences 0.6 - [0, .1, .2, .3, .4, .5] all > 0 -> W- = 0, exact two-sided p = 2 / 2^6 = 0.03125
    assert (t.n_users, t.mean_a, t.mean_b) == (6, pytest.approx(0.6), pytest.approx(0.25))
    assert t.p_value == pytest.approx(0.03125)
    assert "unlikely to be chance" in significance_table(tests, 0.05)
    assert "Claim 1 (CPT then fine-tune beats fine-tune only): supported" in claim_line(tests, 0.05)
    assert "not distinguishable from chance" in significance_table(tests, 0.01)


def test_evaluate_run_writes_report_metrics_and_plots(tmp_path: Path) -> None:
    write_silver(tmp_path)
    cpt = build_tiny_lm(tmp_path / "lm" / "cpt", corpus_texts(), seed=1)
    base = build_tiny_lm(tmp_path / "lm" / "base", corpus_texts(), seed=2)
    cfg = tiny_config(tmp_path, max_epochs=2, variants=["cpt", "base", "zero-shot", "popularity"])
    cfg.evaluate.seeds = [0, 1]
    with pytest.raises(ArtifactError, match="run the finetune stage first|_manifest.json"):
        evaluate_run(cfg)  # evaluate reads finetune's runs; it never trains them itself
    finetune_run(cfg, cpt, base)
    out = evaluate_run(cfg)
    report = Path(out["report_dir"])
    assert report == tmp_path / "reports" / "t"
    verify(report, deep=True)
    metrics = read_table(REPORT_METRICS, report).to_pandas()
    # 1 domain x 4 variants x 2 seeds x 2 splits x 5 metrics (Recall@5/10, NDCG@5/10, MRR)
    assert len(metrics) == 4 * 2 * 2 * 5
    assert metrics["value"].between(0, 1).all()
    per_user = read_table(REPORT_PER_USER, report).to_pandas()
    assert len(per_user) == 4 * 2 * 40  # test split only
    text = (report / "report.md").read_text()
    for section in (
        "## What was compared",
        "## Data",
        "## How it was measured",
        "## Results (test split)",
        "## Is the difference real? (paired significance)",
        "## Training",
        "| Grocery | 40 | 30 | 201 |",  # users, items, train events of the fixture
        "cpt vs base",
        "cpt vs popularity",
        "Claim 1",
    ):
        assert section in text, section
    assert out["report_md"] == text and "| popularity | 2 |" in out["tables"][DOMAIN]
    assert (report / "plots" / f"metrics_{DOMAIN}.png").stat().st_size > 1000
    assert (report / "plots" / f"curves_{DOMAIN}.png").stat().st_size > 1000
