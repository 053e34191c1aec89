"""The paper's central claim on synthetic data, as far as it holds on every machine.

The synthetic users follow latent cross-domain themes, each a family of three interchangeable
words; consecutive items of a user share a theme most of the time, and each domain has a long
tail of 1,000 items, so most items have only a few events. The base LLM is a small *general* LM
(model.tiny.pretrain_steps: item lines in random order, no behaviour): it knows how item text
reads but not which items go together. CPT on the six pre-training domains' behaviour sequences
teaches that; the frozen item encoder (token-mean of every layer, standardised per dimension)
can then group the never-seen Grocery items by taste, while `base` must learn that from
Grocery's own sparse training events.

Runs the real flow in-process (every stage) on the demo config at its three seeds, cpt and base
only, every model trained to patience. What holds everywhere, and is asserted: CPT learns the
behaviour (the held-out probe item's perplexity falls several-fold), the recommender built on it
is not worse than base on the unseen domain, and claims.json carries the paired test over 3 seeds.
Whether cpt *beats* base is the measurement, reported in RESULTS.md ("The demo on two machines"),
not asserted: the same code and data gave cpt 0.1805 vs base 0.1570 (effect +0.0236, p 0.026) on
an earlier machine and cpt 0.1684 vs base 0.1643 (+0.0041, p 0.84, inconclusive) on an AVX-512
Xeon, deterministically on each: one CPT run's float path decides it, so the effect is within the
spread of CPT runs, not a property of the pipeline a test can hold.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean

import pyarrow.compute as pc
import pytest

from cprec_core.artifacts import PROJECT_ROOT, read_table
from cprec_core.claims import read_claims
from cprec_core.cpt import read_summary
from cprec_core.paths import cpt_dir
from cprec_core.schema import REPORT_METRICS

NOT_WORSE = 0.01  # cpt's mean may trail base's by less than this (seed-to-seed std: cpt 0.007, base 0.006)


@pytest.mark.slow  # ~3 min: every stage of the demo config
def test_cpt_learns_the_behaviour_and_does_not_hurt_the_unseen_domain(
    prefect_harness, tmp_path: Path
) -> None:
    from flows.cprec import cprec, resolve_config

    overrides = [
        "name=cpthelps",
        f"paths.root={tmp_path / 'root'}",
        f"synth.out_dir={tmp_path / 'raw'}",
        f"ingest.sources.0.path={tmp_path / 'raw'}",
        "finetune.variants=[cpt,base]",
    ]
    config = str(PROJECT_ROOT / "configs" / "demo.yaml")
    state = cprec(config=config, stages="all", overrides=overrides, return_state=True)
    assert state.is_completed()

    cfg = resolve_config(config, overrides)
    summary = read_summary(cpt_dir(cfg))
    # measured 14.3 -> 2.1: the held-out item given the user's train history
    assert summary["probe_target_perplexity_after"] < summary["probe_target_perplexity_before"] / 3, summary

    report_dir = cfg.root / "reports" / cfg.name
    metrics = read_table(REPORT_METRICS, report_dir)
    test = metrics.filter(
        pc.and_(
            pc.and_(pc.equal(metrics["split"], "test"), pc.equal(metrics["metric"], "NDCG@10")),
            pc.equal(metrics["protocol"], "masked"),
        )
    ).to_pylist()
    ndcg = {v: mean(r["value"] for r in test if r["variant"] == v) for v in ("cpt", "base")}
    assert len(test) == 6 and ndcg["cpt"] > ndcg["base"] - NOT_WORSE, ndcg

    (claim,) = [c for c in read_claims(report_dir / "claims.json")["comparisons"] if c["claim"] == "1"]
    assert (claim["a"], claim["b"]) == ("cpt", "base")
    assert claim["n_seeds_a"] == claim["n_seeds_b"] == 3 and claim["n_users"] > 400, claim
    assert abs(claim["effect"] - (ndcg["cpt"] - ndcg["base"])) < 0.005, claim  # the per-user paired mean
    assert claim["ci_low"] <= claim["effect"] <= claim["ci_high"] and 0 <= claim["p_value"] <= 1, claim
    assert (
        "| 1. CPT then fine-tune beats fine-tune only | Grocery | cpt vs base |"
        in (report_dir / "report.md").read_text()
    )
