"""The experiment flow (flows/experiment.py): three arms, one combined report with the claims.

A reduced run, on synthetic data and on the real data (as `make realdata SCALE=tiny` runs it,
shrunk: Arts + Office as the CPT domains, a few CPT steps, one epoch, one seed). These check that
the whole path works and the report holds what it must; the outcome is what RESULTS.md records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from cprec_core.artifacts import PROJECT_ROOT, read_table, verify
from cprec_core.experiment import ARMS, experiment_dir
from cprec_core.schema import GOLD_CORPUS, REPORT_METRICS
from cprec_core.stages import base_model_dir, cpt_dir

SMALL = [
    "finetune.max_epochs=1",
    "evaluate.seeds=[0,1]",
    "cpt.max_steps=4",
    "cpt.checkpoint_every=4",
    "cpt.log_every=1",
    "cpt.probe_max_docs=10",
    "model.tiny.pretrain_steps=4",
]
SYNTH_SMALL = [
    "synth.n_users=150",
    "synth.n_items_per_domain=40",
    "synth.n_interactions=4000",
    "behaviors.k_core=2",
]


def run_experiment(config: Path, overrides: list[str]) -> dict:
    from flows.cprec import resolve_config
    from flows.experiment import experiment

    summary = experiment(config=str(config), overrides=overrides)
    return {"summary": summary, "cfg": resolve_config(str(config), overrides)}


def check_report(cfg, summary: dict) -> None:
    report_dir = experiment_dir(cfg)
    assert summary["report_dir"] == str(report_dir)
    metrics = read_table(REPORT_METRICS, report_dir)
    test = metrics.filter(pc.and_(pc.equal(metrics["split"], "test"), pc.equal(metrics["metric"], "NDCG@10")))
    variants = set(test["variant"].to_pylist())
    assert variants == {"cpt", "cpt-domain-only", "cpt-cosine", "base", "zero-shot", "popularity", "sasrec"}
    assert test.num_rows == len(variants) * len(cfg.evaluate.seeds)  # every variant at every seed
    claims = [c for c, _, _ in summary["claims"]]
    assert [c.split(" (")[0] for c in claims] == ["Claim 1", "Claim 2", "Claim 3", "Claim 4"]
    verdicts = {
        "supported",
        "pointing the right way but not significant",
        "not supported",
        "supported across seeds (one downstream domain: not tested across domains)",  # Claim 4 only
    }
    assert {v for _, _, v in summary["claims"]} <= verdicts
    report = (report_dir / "report.md").read_text()
    for needle in ("## Claims", "| cpt vs cpt-domain-only |", "| cpt vs cpt-cosine |", "seed 1", "→"):
        assert needle in report, needle
    assert (report_dir / "plots" / f"metrics_{cfg.domains.downstream[0]}.png").stat().st_size > 0


def check_arms(cfg) -> None:
    """Each ablation changed its one setting, started from the main base model, in its own root."""
    arm_root = {arm: cfg.root / "ablations" / arm for arm in ARMS[1:]}
    for arm, root in arm_root.items():
        summary = json.loads((root / "models" / "cpt" / f"{cfg.name}-{arm}" / "summary.json").read_text())
        assert Path(summary["base_model_dir"]).resolve() == base_model_dir(cfg).resolve()
        assert summary["steps"] == cfg.cpt.max_steps  # the same token budget
        # the combined report carries that arm's cpt rows, renamed, unchanged
        own = read_table(REPORT_METRICS, root / "reports" / f"{cfg.name}-{arm}").to_pandas()
        combined = read_table(REPORT_METRICS, experiment_dir(cfg)).to_pandas()
        renamed = combined[combined.variant == f"cpt-{arm}"].drop(columns="variant").reset_index(drop=True)
        assert renamed.equals(own[own.variant == "cpt"].drop(columns="variant").reset_index(drop=True))
    main_mix = verify(GOLD_CORPUS.path(cfg.root)).extra["mix_ratio_achieved"]
    assert verify(GOLD_CORPUS.path(arm_root["domain-only"])).extra["mix_ratio_achieved"] == 0.0 < main_mix
    main_lr = lr_curve(cpt_dir(cfg))
    cosine_lr = lr_curve(arm_root["cosine"] / "models" / "cpt" / f"{cfg.name}-cosine")
    assert len(main_lr) == len(cosine_lr) and main_lr != cosine_lr  # same steps, another schedule


def lr_curve(model_dir: Path) -> list[float]:
    return [json.loads(line)["lr"] for line in (model_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_experiment_on_synthetic_data(prefect_harness, tmp_path: Path) -> None:
    overrides = [
        "name=exp",
        f"paths.root={tmp_path / 'root'}",
        f"synth.out_dir={tmp_path / 'raw'}",
        f"ingest.sources.0.path={tmp_path / 'raw'}",
        *SYNTH_SMALL,
        *SMALL,
    ]
    out = run_experiment(PROJECT_ROOT / "configs" / "demo.yaml", overrides)
    check_report(out["cfg"], out["summary"])
    check_arms(out["cfg"])


@pytest.mark.slow
@pytest.mark.realdata
def test_experiment_on_real_data_reduced(prefect_harness, shared_data: Path, tmp_path: Path) -> None:
    from cprec_core.realdata import prepare_realdata

    raw = tmp_path / "raw"
    prepare_realdata(shared_data, raw)
    overrides = [
        "name=realtiny",
        f"paths.root={tmp_path / 'root'}",
        f"ingest.sources.0.path={raw}",
        "ingest.sources.0.domains=[Arts,Office,Scientific]",
        "domains.pretrain=[Arts,Office]",
        *SMALL,
    ]
    out = run_experiment(PROJECT_ROOT / "configs" / "realdata.yaml", overrides)
    check_report(out["cfg"], out["summary"])
    check_arms(out["cfg"])
