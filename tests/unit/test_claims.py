"""cprec_core/claims.py: the cluster bootstrap on hand-made cases, verdicts, Holm, claims.json's schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cprec_core.claims import (
    ClaimsError,
    cluster_bootstrap,
    compare,
    holm,
    read_claims,
    summarize,
    verdict,
    write_claims,
)
from cprec_core.schema import REPORT_PER_USER


def test_bootstrap_resamples_seeds_hand_case() -> None:
    # a's two seeds give every user 1 and 3; b is 0 everywhere. Users are identical within a seed,
    # so only the seed draw matters: the mean of two draws from {1, 3} is 1 (p 1/4), 2 (1/2) or
    # 3 (1/4); the 2.5 % and 97.5 % quantiles are therefore 1 and 3; the effect is 2.
    a = np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    b = np.zeros((1, 3))
    effect, low, high = cluster_bootstrap(a, b, n_boot=4000, seed=1)
    assert (effect, low, high) == (2.0, 1.0, 3.0)


def test_bootstrap_resamples_users_jointly_hand_case() -> None:
    # one seed each; the per-user differences are 0 for one user and 1 for the other: the mean of
    # two draws is 0, 0.5 or 1 with p 1/4, 1/2, 1/4. Pairing matters: a and b move together.
    a = np.array([[5.0, 7.0]])
    b = np.array([[5.0, 6.0]])
    effect, low, high = cluster_bootstrap(a, b, n_boot=4000, seed=2)
    assert effect == 0.5 and (low, high) == (0.0, 1.0)
    # identical variants: a zero-width interval at 0
    assert cluster_bootstrap(a, a, n_boot=100) == (0.0, 0.0, 0.0)


def test_bootstrap_refuses_misaligned_users() -> None:
    with pytest.raises(ValueError, match="same users"):
        cluster_bootstrap(np.zeros((2, 3)), np.zeros((1, 4)))


def test_verdict_needs_both_the_interval_and_holm() -> None:
    assert verdict(0.01, 0.02, 0.001, 0.05) == "supported"
    assert verdict(-0.01, 0.02, 0.001, 0.05) == "inconclusive"  # the interval crosses zero
    assert verdict(0.01, 0.02, 0.2, 0.05) == "inconclusive"  # significant interval, not after Holm
    assert verdict(-0.03, -0.01, 0.001, 0.05) == "contradicted"


def test_holm_on_a_hand_case() -> None:
    # p = [0.01, 0.04, 0.03], m = 3; sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, .04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def per_user(values: dict[tuple[str, str], list[list[float]]]) -> pd.DataFrame:
    """{(domain, variant): [seed][user] NDCG@10} -> a REPORT_PER_USER frame (ranks unused)."""
    rows = []
    for (domain, variant), seeds in values.items():
        for s, users in enumerate(seeds):
            rows += [(domain, variant, s, f"u{u}", 0, x, 0, x) for u, x in enumerate(users)]
    return pd.DataFrame(rows, columns=REPORT_PER_USER.schema.names)


def test_compare_and_summarize_over_domains_and_seeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.01, 60)  # noqa: E731
    table = per_user(
        {
            ("D1", "cpt"): [list(0.30 + noise()), list(0.31 + noise()), list(0.29 + noise())],
            ("D1", "base"): [list(0.20 + noise()), list(0.21 + noise()), list(0.19 + noise())],
            ("D2", "cpt"): [list(0.20 + noise()), list(0.20 + noise()), list(0.20 + noise())],
            ("D2", "base"): [list(0.20 + noise()), list(0.20 + noise()), list(0.20 + noise())],
        }
    )
    plan = [("1", "cpt beats base", d, "cpt", "base") for d in ("D1", "D2")]
    plan.append(("2", "absent", "D1", "cpt", "cpt-domain-only"))  # a variant not run: skipped
    rows = compare(table, plan, "wilcoxon", 0.05)
    assert [(r.domain, r.verdict) for r in rows] == [("D1", "supported"), ("D2", "inconclusive")]
    d1 = rows[0]
    assert d1.effect == pytest.approx(0.10, abs=0.005) and d1.ci_low > 0.08 and d1.ci_high < 0.12
    assert (d1.n_users, d1.n_seeds_a, d1.n_seeds_b) == (60, 3, 3)
    summary = {(s["claim"], s["verdict"]) for s in summarize(rows, table, ["D1", "D2"])}
    # supported in one domain of two: the claim (in every domain) is inconclusive, and so is Claim 4
    assert summary == {("1", "inconclusive"), ("4", "inconclusive")}
    path = write_claims(tmp_path, rows, summarize(rows, table, ["D1", "D2"]), 0.05)
    doc = read_claims(path)
    assert [c["domain"] for c in doc["comparisons"]] == ["D1", "D2"] and doc["metric"] == "NDCG@10"


def test_claims_json_schema_errors_name_the_field(tmp_path: Path) -> None:
    table = per_user({("D", "cpt"): [[0.3, 0.4, 0.5]], ("D", "base"): [[0.1, 0.2, 0.1]]})
    rows = compare(table, [("1", "t", "D", "cpt", "base")], "wilcoxon", 0.05)
    path = write_claims(tmp_path, rows, [], 0.05)
    doc = json.loads(path.read_text())
    doc["comparisons"][0]["verdict"] = "probably"
    path.write_text(json.dumps(doc))
    with pytest.raises(ClaimsError, match=r"comparisons\[0\]\.verdict: 'probably'"):
        read_claims(path)
    del doc["comparisons"][0]["p_holm"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ClaimsError, match=r"comparisons\[0\]: fields \['p_holm'\] differ"):
        read_claims(path)
    with pytest.raises(ClaimsError, match="no claims file"):
        read_claims(tmp_path / "nope.json")
