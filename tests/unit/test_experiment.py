"""cprec_core/experiment.py: the planned runs (one setting changed per arm, CPT seeds, shared roots),
the claims each arm can test, and the tables of the combined report."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from cprec_core.artifacts import PROJECT_ROOT
from cprec_core.config import load_config
from cprec_core.experiment import ABLATIONS, ARMS, ExperimentError, arm_variant, claim_plan, plan, seed_table
from cprec_core.schema import REPORT_METRICS

DEMO = PROJECT_ROOT / "configs" / "demo.yaml"


def flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_each_ablation_arm_changes_its_one_setting_and_nothing_else(tmp_path: Path) -> None:
    variants = "finetune.variants=[cpt,base,zero-shot,popularity,sasrec]"
    given = [f"paths.root={tmp_path}", "experiment.cpt_seeds=[0,1,2]", variants]
    main = load_config(DEMO, given)
    base = flat(main.model_dump(mode="json"))
    # where a run lives, what it trains, which CPT / fine-tuning seed: plumbing, not the arm's setting
    plumbing = {"name", "paths.root", "model.path", "finetune.variants", "cpt.seed", "evaluate.seeds"}
    expected = {
        "shuffled": {"corpus.shuffle_lines": True},
        "domain-only": {"corpus.mix_ratio": 0},
        "cosine": {"cpt.schedule.kind": "cosine"},
    }
    runs = plan(main, list(ARMS))
    assert len(runs) == 1 + 4 * 3  # the variants without CPT once, then 4 arms x 3 CPT seeds
    first = runs[0]
    assert (first.arm, first.cpt_seed) == ("main", None) and "cpt" not in first.stages
    for run in runs[1:]:
        cfg = load_config(DEMO, [*given, *run.overrides])
        now = flat(cfg.model_dump(mode="json"))
        changed = {k: now[k] for k in base if now[k] != base[k]}
        assert set(changed) - plumbing == set(expected.get(run.arm, {})), run
        assert cfg.cpt.seed == run.cpt_seed and cfg.evaluate.seeds == [run.cpt_seed]
        if run.arm == "main":
            assert cfg.root == tmp_path and cfg.finetune.variants == ["cpt", "zero-shot"]
            continue
        assert cfg.finetune.variants == ["cpt"] and cfg.name == f"{main.name}-{run.arm}-s{run.cpt_seed}"
        assert Path(cfg.model.path) == (tmp_path / "models" / "base" / "tiny").resolve()  # the main base
        own = ABLATIONS[run.arm].own_corpus
        assert cfg.root == ((tmp_path / "ablations" / run.arm).resolve() if own else tmp_path)
        assert ("corpus" in run.stages) == own  # cosine shares main's corpus and blocks
    base_cfg = load_config(DEMO, [*given, *first.overrides])
    assert base_cfg.finetune.variants == ["base", "popularity", "sasrec"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("finetune.variants=[cpt,sasrec]", "must include a cpt variant and its base twin"),
        ("corpus.mix_ratio=0", "corpus.mix_ratio is 0"),
        ("corpus.shuffle_lines=true", "must keep the behaviour order"),
        ("cpt.schedule.kind=cosine", "cpt.schedule.kind is 'cosine'"),
        ("experiment.arm_variants=[cpt-lora]", "experiment.arm_variants ['cpt-lora']"),
    ],
)
def test_a_main_arm_unfit_for_the_claims_is_refused(tmp_path: Path, override: str, message: str) -> None:
    cfg = load_config(DEMO, [f"paths.root={tmp_path}", override])
    with pytest.raises(ExperimentError, match=re.escape(message)):
        plan(cfg, list(ARMS))
    with pytest.raises(ExperimentError, match="arms \\['nope'\\] unknown"):
        plan(load_config(DEMO), ["main", "nope"])


def test_claims_pair_each_mode_with_its_base_and_each_arm_with_cpt() -> None:
    cfg = load_config(
        DEMO,
        [
            "finetune.variants=[cpt-frozen,base-frozen,cpt-top,base-top,zero-shot,zero-shot-base,sasrec]",
            "experiment.arm_variants=[cpt-top]",
            "domains.downstream=[Grocery]",
        ],
    )
    rows = [(c, a, b) for c, _, _, a, b in claim_plan(cfg, ["main", "shuffled", "cosine"])]
    assert rows == [
        ("1", "cpt-frozen", "base-frozen"),
        ("1", "cpt-top", "base-top"),
        ("1-control", "cpt-top", "cpt-shuffled-top"),
        ("3", "cpt-top", "cpt-cosine-top"),
        ("zero-shot", "zero-shot", "zero-shot-base"),
    ]
    assert (
        arm_variant("cpt", "domain-only") == "cpt-domain-only" and arm_variant("cpt-top", "main") == "cpt-top"
    )


def test_seed_table_lists_each_variant_at_each_seed_in_the_given_order() -> None:
    rows = [
        ("D", v, seed, "test", "masked", "NDCG@10", x)
        for v, xs in {"cpt": [0.31234, 0.4], "sasrec": [0.5, 0.6]}.items()
        for seed, x in enumerate(xs)
    ]
    rows.append(("D", "cpt", 0, "test", "unmasked", "NDCG@10", 0.9))  # the other protocol: not shown
    metrics = pd.DataFrame(rows, columns=REPORT_METRICS.schema.names)
    assert seed_table(metrics, "D", ["sasrec", "cpt", "absent"]).splitlines() == [
        "| variant | seed 0 | seed 1 |",
        "|---|---:|---:|",
        "| sasrec | 0.5000 | 0.6000 |",
        "| cpt | 0.3123 | 0.4000 |",
    ]


def test_a_costly_mode_runs_at_the_costly_seeds_only(tmp_path: Path) -> None:
    given = [
        f"paths.root={tmp_path}",
        "experiment.cpt_seeds=[0,1,2]",
        "finetune.variants=[cpt,base,cpt-full,base-full,sasrec]",
        "experiment.costly_variants=[cpt-full]",
        "experiment.costly_seeds=[0]",
    ]
    main = load_config(DEMO, given)
    runs = plan(main, ["main"])
    configs = {run.cpt_seed: load_config(DEMO, [*given, *run.overrides]) for run in runs}
    assert configs[None].finetune.variants == ["base", "base-full", "sasrec"]
    assert configs[None].finetune.variant_seeds == {"base-full": [0]}  # the base twin at seed 0 only
    assert configs[0].finetune.variants == ["cpt", "cpt-full"]
    assert configs[1].finetune.variants == configs[2].finetune.variants == ["cpt"]
