"""cprec_core/experiment.py: arms that change one setting each, claims read off hand-made tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cprec_core.artifacts import PROJECT_ROOT
from cprec_core.config import load_config
from cprec_core.experiment import ARMS, ExperimentError, arm_overrides, claims, seed_table
from cprec_core.metrics import PairedTest
from cprec_core.schema import REPORT_METRICS

DEMO = PROJECT_ROOT / "configs" / "demo.yaml"


def flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_each_ablation_arm_changes_its_one_setting_and_nothing_else(tmp_path: Path) -> None:
    main = load_config(DEMO, [f"paths.root={tmp_path}"])
    base = flat(main.model_dump(mode="json"))
    plumbing = {"name", "paths.root", "model.path", "finetune.variants"}  # where an arm lives, what it trains
    expected = {"domain-only": {"corpus.mix_ratio": 0}, "cosine": {"cpt.schedule.kind": "cosine"}}
    for arm in ARMS[1:]:
        cfg = load_config(DEMO, [f"paths.root={tmp_path}", *arm_overrides(main, arm)])
        now = flat(cfg.model_dump(mode="json"))
        changed = {k: now[k] for k in base if now[k] != base[k]}
        assert set(changed) - plumbing == set(expected[arm]), arm
        assert {k: changed[k] for k in expected[arm]} == expected[arm]
        assert cfg.root == (tmp_path / "ablations" / arm).resolve()
        assert Path(cfg.model.path) == (tmp_path / "models" / "base" / "tiny").resolve()  # the main base
        assert cfg.finetune.variants == ["cpt"] and cfg.name == f"{main.name}-{arm}"
    assert arm_overrides(main, "main") == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("finetune.variants=[cpt,sasrec]", "finetune.variants must include base"),
        ("corpus.mix_ratio=0", "corpus.mix_ratio is 0"),
        ("cpt.schedule.kind=cosine", "cpt.schedule.kind is 'cosine'"),
    ],
)
def test_a_main_arm_unfit_for_the_claims_is_refused(tmp_path: Path, override: str, message: str) -> None:
    cfg = load_config(DEMO, [f"paths.root={tmp_path}", override])
    with pytest.raises(ExperimentError, match=message):
        arm_overrides(cfg, "main")
    with pytest.raises(ExperimentError, match="arm 'nope' unknown"):
        arm_overrides(load_config(DEMO), "nope")


def metrics_frame(values: dict[str, list[float]], domain: str = "D") -> pd.DataFrame:
    rows = [(domain, v, seed, "test", "NDCG@10", x) for v, xs in values.items() for seed, x in enumerate(xs)]
    return pd.DataFrame(rows, columns=REPORT_METRICS.schema.names)


def paired(a: float, b: float, p: float) -> PairedTest:
    return PairedTest("wilcoxon", 100, a, b, 0.0, p)


def test_claims_use_holm_over_the_domain_and_say_when_only_one_domain_was_tested() -> None:
    metrics = metrics_frame({"cpt": [0.3, 0.4], "base": [0.2, 0.1]})
    tests = {
        "D": {
            "cpt-domain-only": paired(0.35, 0.30, 0.04),  # Holm: sorted p .001, .01, .04 -> x3, x2, x1
            "cpt-cosine": paired(0.35, 0.36, 0.01),  # cpt lower: never supported
            "base": paired(0.35, 0.15, 0.001),
        }
    }
    rows = {c.split(" (")[0]: (e, v) for c, e, v in claims(metrics, tests, alpha=0.05)}
    assert rows["Claim 1"] == ("D: cpt 0.3500 vs base 0.1500, Holm p = 0.003", "supported")
    # 0.04 alone would pass; Holm makes it max(0.02, 0.04 * 1) = 0.04 -> still < 0.05
    assert rows["Claim 2"][1] == "supported"
    assert rows["Claim 3"] == ("D: cpt 0.3500 vs cpt-cosine 0.3600, Holm p = 0.02", "not supported")
    assert rows["Claim 4"] == (
        "cpt > base NDCG@10 in 2 of 2 (domain, seed) pairs",
        "supported across seeds (one downstream domain: not tested across domains)",
    )


def test_claim_4_fails_when_one_seed_goes_the_other_way() -> None:
    metrics = metrics_frame({"cpt": [0.3, 0.1], "base": [0.2, 0.2]})
    rows = {c.split(" (")[0]: v for c, _, v in claims(metrics, {"D": {"base": paired(0.2, 0.2, 0.9)}}, 0.05)}
    assert rows["Claim 1"] == "not supported"
    assert rows["Claim 4"] == "not supported"


def test_seed_table_lists_each_variant_at_each_seed_in_the_given_order() -> None:
    metrics = metrics_frame({"cpt": [0.31234, 0.4], "sasrec": [0.5, 0.6]})
    assert seed_table(metrics, "D", ["sasrec", "cpt", "absent"]).splitlines() == [
        "| variant | seed 0 | seed 1 |",
        "|---|---:|---:|",
        "| sasrec | 0.5000 | 0.6000 |",
        "| cpt | 0.3123 | 0.4000 |",
    ]
