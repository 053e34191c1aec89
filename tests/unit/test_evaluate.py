"""cprec_core/evaluate.py: both protocols, claims.json with intervals, the report; it never trains."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rec_fixtures import DOMAIN, tiny_config, write_silver

from cprec_core.artifacts import ArtifactError, read_table, verify
from cprec_core.claims import read_claims
from cprec_core.evaluate import claim_plan, cut_short, evaluate_run, significance
from cprec_core.rec.finetune import finetune_run
from cprec_core.schema import REPORT_METRICS, REPORT_PER_USER

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: exact, repeatable numbers


def test_significance_averages_seeds_per_user_then_pairs_users() -> None:
    # 6 users; cpt's NDCG@10 is the seed mean (0.5, 0.7) = 0.6 for every user, base's 0.1 * user index
    rows = []
    for u in range(6):
        rows += [(DOMAIN, "cpt", s, f"u{u}", 0, v, 0, v) for s, v in ((0, 0.5), (1, 0.7))]
        rows += [(DOMAIN, "base", s, f"u{u}", 0, 0.1 * u, 0, 0.1 * u) for s in (0, 1)]
    per_user = pd.DataFrame(rows, columns=REPORT_PER_USER.schema.names)
    t = significance(per_user, DOMAIN, "cpt", ["base"], "wilcoxon")["base"]
    # differences 0.6 - [0, .1, .2, .3, .4, .5] all > 0 -> W- = 0, exact two-sided p = 2 / 2^6 = 0.03125
    assert (t.n_users, t.mean_a, t.mean_b) == (6, pytest.approx(0.6), pytest.approx(0.25))
    assert t.p_value == pytest.approx(0.03125)


def test_claim_plan_pairs_each_cpt_mode_with_its_base_twin() -> None:
    variants = ["cpt", "base", "cpt-top", "base-top", "cpt-lora", "zero-shot", "zero-shot-base", "sasrec"]
    plan = [(c, d, a, b) for c, _, d, a, b in claim_plan(variants, ["A", "B"])]
    assert plan == [
        ("1", "A", "cpt", "base"),
        ("1", "A", "cpt-top", "base-top"),
        ("zero-shot", "A", "zero-shot", "zero-shot-base"),
        ("1", "B", "cpt", "base"),
        ("1", "B", "cpt-top", "base-top"),
        ("zero-shot", "B", "zero-shot", "zero-shot-base"),
    ]  # cpt-lora has no base twin: nothing to compare it with


def test_evaluate_run_writes_both_protocols_claims_and_the_report(
    tiny_lms: tuple[Path, Path], tmp_path: Path
) -> None:
    write_silver(tmp_path)
    cpt, base = tiny_lms
    variants = ["cpt", "base", "zero-shot", "zero-shot-base", "popularity"]
    cfg = tiny_config(tmp_path, max_epochs=2, variants=variants)
    cfg.evaluate.seeds = [0, 1]
    with pytest.raises(ArtifactError, match="run the finetune stage first|_manifest.json"):
        evaluate_run(cfg)  # evaluate reads finetune's runs; it never trains them itself
    finetune_run(cfg, cpt, base)
    out = evaluate_run(cfg)
    report = Path(out["report_dir"])
    assert report == tmp_path / "reports" / "t"
    verify(report, deep=True)
    metrics = read_table(REPORT_METRICS, report).to_pandas()
    # 1 domain x 5 variants x 2 seeds x 2 splits x 2 protocols x 5 metrics (Recall@5/10, NDCG@5/10, MRR)
    assert len(metrics) == 5 * 2 * 2 * 2 * 5
    assert metrics["value"].between(0, 1).all()
    wide = metrics.pivot_table(
        index=["variant", "seed", "split", "metric"], columns="protocol", values="value"
    )
    # masking the history can only move a target up: every masked metric >= its unmasked twin
    assert (wide["masked"] >= wide["unmasked"] - 1e-12).all()
    per_user = read_table(REPORT_PER_USER, report).to_pandas()
    assert len(per_user) == 5 * 2 * 40  # test split only
    assert (per_user["rank"] <= per_user["rank_unmasked"]).all()
    claims = read_claims(report / "claims.json")
    assert [(c["claim"], c["a"], c["b"]) for c in claims["comparisons"]] == [
        ("1", "cpt", "base"),
        ("zero-shot", "zero-shot", "zero-shot-base"),
    ]
    assert claims["comparisons"][0]["n_seeds_a"] == 2 and claims["comparisons"][0]["n_users"] == 40
    assert out["summary"] == claims["summary"]
    text = (report / "report.md").read_text()
    for section in (
        "## What was compared",
        "## Claims",
        "## Data",
        "## How it was measured",
        "History unmasked (RecBole's protocol)",
        "## Training",
        "| Grocery | 40 | 30 | 201 |",  # users, items, train events of the fixture
        "cpt vs base",
        "cpt vs popularity",
        "cut short by the cap",
    ):
        assert section in text, section
    assert "| popularity | 2 |" in out["tables"][DOMAIN]
    assert (report / "plots" / f"metrics_{DOMAIN}.png").stat().st_size > 1000
    assert (report / "plots" / f"curves_{DOMAIN}.png").stat().st_size > 1000


def test_cut_short_reads_the_runs_own_record() -> None:
    assert cut_short({"curve": [{}], "cut_short": True}) and not cut_short({"curve": [], "cut_short": False})
