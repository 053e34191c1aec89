"""The experiment flow (flows/experiment.py): every arm at two CPT seeds, one combined report and
claims.json.

A reduced run on synthetic data and on the real data (as `make realdata SCALE=tiny` runs it,
shrunk: a few CPT steps, one epoch). These check that the whole path works and the report holds
what it must; the outcome is what RESULTS.md records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from cprec_core.artifacts import PROJECT_ROOT, read_table, verify
from cprec_core.claims import read_claims
from cprec_core.config import PathsConfig
from cprec_core.experiment import ABLATIONS, run_name
from cprec_core.paths import base_model_dir, cpt_dir, experiment_dir
from cprec_core.schema import GOLD_CORPUS, REPORT_METRICS

SMALL = [
    "finetune.max_epochs=1",
    "finetune.variants=[cpt,base,zero-shot,zero-shot-base,popularity,sasrec]",
    "experiment.arm_variants=[cpt]",
    "experiment.costly_variants=[]",
    "evaluate.seeds=[0,1]",
    "experiment.cpt_seeds=[0,1]",
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
    test = metrics.filter(
        pc.and_(
            pc.and_(pc.equal(metrics["split"], "test"), pc.equal(metrics["metric"], "NDCG@10")),
            pc.equal(metrics["protocol"], "masked"),
        )
    )
    variants = set(test["variant"].to_pylist())
    arms = {f"cpt-{a}" for a in ABLATIONS}
    assert variants == {"cpt", "base", "zero-shot", "zero-shot-base", "popularity", "sasrec"} | arms
    assert test.num_rows == len(variants) * 2  # two CPT seeds, or two fine-tuning seeds, for each
    claims = read_claims(report_dir / "claims.json")
    tested = {(c["claim"], c["a"], c["b"]) for c in claims["comparisons"]}
    assert tested == {
        ("1", "cpt", "base"),
        ("1-control", "cpt", "cpt-shuffled"),
        ("2", "cpt", "cpt-domain-only"),
        ("3", "cpt", "cpt-cosine"),
        ("zero-shot", "zero-shot", "zero-shot-base"),
    }
    assert all(c["n_seeds_a"] == 2 for c in claims["comparisons"])
    assert {s["claim"] for s in claims["summary"]} == {"1", "1-control", "2", "3", "4", "zero-shot"}
    assert summary["summary"] == claims["summary"]
    report = (report_dir / "report.md").read_text()
    for needle in (
        "## Claims",
        "cpt vs cpt-shuffled",
        "History unmasked",
        "seed 1",
        "held-out item perplexity",
    ):
        assert needle in report, needle
    assert (report_dir / "plots" / f"metrics_{cfg.domains.downstream[0]}.png").stat().st_size > 0


def check_arms(cfg) -> None:
    """Each ablation changed its one setting and started from the main base model; cosine shares
    main's root, the others have their own."""
    for arm, ablation in ABLATIONS.items():
        root = cfg.root / "ablations" / arm if ablation.own_corpus else cfg.root
        for seed in (0, 1):
            run = cfg.model_copy(update={"name": run_name(cfg, arm, seed), "paths": PathsConfig(root=root)})
            summary = json.loads((cpt_dir(run) / "summary.json").read_text())
            assert Path(summary["base_model_dir"]).resolve() == base_model_dir(cfg).resolve()
            assert summary["steps"] == cfg.cpt.max_steps  # the same token budget
    shuffled = verify(GOLD_CORPUS.path(cfg.root / "ablations" / "shuffled")).extra
    main = verify(GOLD_CORPUS.path(cfg.root)).extra
    assert shuffled["shuffled_lines"] and not main["shuffled_lines"]
    assert shuffled["characters_total"] == main["characters_total"]  # the same text, reordered
    assert verify(GOLD_CORPUS.path(cfg.root / "ablations" / "domain-only")).extra["mix_ratio_achieved"] == 0.0
    main_lr = lr_curve(cfg.root / "models" / "cpt" / run_name(cfg, "main", 0))
    cosine_lr = lr_curve(cfg.root / "models" / "cpt" / run_name(cfg, "cosine", 0))
    assert len(main_lr) == len(cosine_lr) and main_lr != cosine_lr  # same steps, another schedule
    seed0 = (cfg.root / "models" / "cpt" / run_name(cfg, "main", 0) / "model.safetensors").read_bytes()
    seed1 = (cfg.root / "models" / "cpt" / run_name(cfg, "main", 1) / "model.safetensors").read_bytes()
    assert seed0 != seed1  # two CPT seeds are two CPT runs


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
        "domains.downstream=[Scientific]",
        *SMALL,
    ]
    out = run_experiment(PROJECT_ROOT / "configs" / "realdata.yaml", overrides)
    check_report(out["cfg"], out["summary"])
    check_arms(out["cfg"])
