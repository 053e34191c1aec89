"""The stage registry: each stage, what it reads and writes, where it runs, and its cache key.

`SPECS` is the one list of stages: the `cprec` flow runs them in this order through the task of
the same name (tasks/<stage>.py), hands the GPU ones to their deployment, and deploy/prefect.yaml
must agree with it (tests/unit/test_stages.py). Adding a stage = one entry here, one core module,
one thin task, its SQL or tests, its deployment.

A stage's key = artifacts.identity(its own config sections, the fingerprints of its inputs'
manifests and of the models it reads, code version). Keys are computed from what is on disk, so
rerunning one stage alone (from the Prefect UI, or `cprec run --stages corpus`) reuses upstream
artifacts exactly when they are unchanged.
A stamp per stage records which key produced the outputs now on disk; a cached result is used
only while that stamp matches (`outputs_match`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cprec_core.artifacts import ArtifactError, atomic_write_text, identity, model_fingerprint, verify
from cprec_core.config import Config
from cprec_core.paths import base_model_dir, cpt_dir, rec_dir, report_dir, serving_dir, state_dir
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    GOLD_CORPUS,
    GOLD_PACKED,
    GOLD_PROBE,
    GOLD_RECOMMENDATIONS,
    QUARANTINE,
    SILVER_EVENTS,
    SILVER_ITEMS,
    SILVER_MIXED,
    SILVER_STATS,
)


@dataclass(frozen=True)
class StageSpec:
    """One stage: the directories it reads and writes (each with a manifest), the LLMs it reads
    (model directories or .gguf files, keyed by `model_fingerprint`), the config sections in its
    key, and the deployment (deploy/prefect.yaml) and work pool that run it alone."""

    name: str
    inputs: Callable[[Config], list[Path]]
    outputs: Callable[[Config], list[Path]]
    sections: tuple[str, ...]
    models: Callable[[Config], list[Path]] = lambda cfg: []
    per_run: bool = False  # outputs under the run name (models/cpt/<name>, ...): keyed and stamped by name
    deployment: str = ""  # `cprec/<deployment>`; "" = the stage's own name. Stages sharing one run together
    pool: Literal["cpu", "gpu"] = "cpu"  # with orchestration.gpu_pool, gpu stages go to their deployment
    refreshed: bool = False  # rebuilt by a corpus refresh (flows/refresh.py) when raw logs change

    @property
    def deployment_name(self) -> str:
        return self.deployment or self.name


def _artifacts(*arts) -> Callable[[Config], list[Path]]:
    return lambda cfg: [a.path(cfg.root) for a in arts]


def _given_model(cfg: Config) -> list[Path]:
    """model.path when set; the tiny base model is pack's own product, keyed by the `model` section."""
    return [Path(cfg.model.path)] if cfg.model.path is not None else []


SPECS: dict[str, StageSpec] = {
    "ingest": StageSpec(
        "ingest",
        lambda cfg: [],
        _artifacts(BRONZE_INTERACTIONS, BRONZE_ITEMS, QUARANTINE),
        ("ingest",),
        refreshed=True,
    ),
    "behaviors": StageSpec(
        "behaviors",
        _artifacts(BRONZE_INTERACTIONS, BRONZE_ITEMS),
        _artifacts(SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED, SILVER_STATS),
        ("behaviors", "domains"),
        refreshed=True,
    ),
    "corpus": StageSpec(
        "corpus",
        _artifacts(SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED),
        _artifacts(GOLD_CORPUS, GOLD_PROBE),
        ("corpus", "domains"),
        refreshed=True,
    ),
    # pack builds the token blocks with the base model's tokenizer, on the node that trains on them
    "pack": StageSpec(
        "pack",
        _artifacts(GOLD_CORPUS),
        _artifacts(GOLD_PACKED),
        ("pack", "model", "corpus"),
        models=_given_model,
        deployment="cpt",
        pool="gpu",
    ),
    "cpt": StageSpec(
        "cpt",
        lambda cfg: [GOLD_PACKED.path(cfg.root), GOLD_PROBE.path(cfg.root)],
        lambda cfg: [cpt_dir(cfg)],
        ("cpt", "model"),
        models=_given_model,
        per_run=True,
        pool="gpu",
    ),
    "finetune": StageSpec(
        "finetune",
        _artifacts(SILVER_EVENTS, SILVER_ITEMS),
        lambda cfg: [rec_dir(cfg)],
        ("finetune", "domains", "evaluate", "corpus"),
        models=lambda cfg: [cpt_dir(cfg), base_model_dir(cfg)],
        per_run=True,
        pool="gpu",
    ),
    "evaluate": StageSpec(
        "evaluate",
        lambda cfg: [rec_dir(cfg)],
        lambda cfg: [report_dir(cfg)],
        ("evaluate", "finetune", "domains"),
        per_run=True,
    ),
    "recommend": StageSpec(
        "recommend",
        lambda cfg: [
            rec_dir(cfg),
            SILVER_EVENTS.path(cfg.root),
            SILVER_ITEMS.path(cfg.root),
        ],
        lambda cfg: [GOLD_RECOMMENDATIONS.path(serving_dir(cfg))],
        ("recommend", "finetune", "domains"),
        per_run=True,
    ),
}


STAGES: tuple[str, ...] = tuple(SPECS)  # in pipeline order
REFRESHED: tuple[str, ...] = tuple(s for s in STAGES if SPECS[s].refreshed)


def gpu_deployment(stage: str) -> str | None:
    """The deployment a GPU pool runs `stage` in, or None for a CPU stage."""
    spec = SPECS[stage]
    return spec.deployment_name if spec.pool == "gpu" else None


def parse_stages(text: str | list[str] | None) -> list[str]:
    """'ingest,corpus' → ordered, validated stage list; None/'all' → every stage."""
    if text is None or text == "all" or text == ["all"]:
        return list(STAGES)
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"stages {unknown} unknown; allowed: {', '.join(STAGES)} (or 'all')")
    return [s for s in STAGES if s in names]


def _fingerprint_or_missing(path: Path, of: Callable[[Path], str] = lambda p: verify(p).fingerprint) -> str:
    """An input's fingerprint, or "missing": the stage itself then fails with its own clear error
    (a key is never where a run fails)."""
    try:
        return of(path)
    except ArtifactError:
        return "missing"


def stage_key(stage: str, cfg: Config) -> str:
    """Cache key of `stage`: its inputs' and models' content fingerprints, its config sections,
    code version (`artifacts.identity`).

    A missing input fingerprints as "missing"; the stage itself then fails with a clear error.
    """
    spec = SPECS[stage]
    inputs = {str(p): _fingerprint_or_missing(p) for p in spec.inputs(cfg)}
    if stage == "ingest":
        from cprec_core.refresh import domain_fingerprints

        inputs = domain_fingerprints(cfg)
    inputs |= {str(p): _fingerprint_or_missing(p, model_fingerprint) for p in spec.models(cfg)}
    sections = {s: getattr(cfg, s).model_dump(mode="json") for s in spec.sections}
    run = {"name": cfg.name} if spec.per_run else {}  # data stages are shared by every run name
    return f"cprec-{stage}-{identity({'stage': stage, 'sections': sections, **run}, inputs)}"


def _stamp_path(stage: str, cfg: Config) -> Path:
    stages = state_dir(cfg.root) / "stages"
    return (stages / cfg.name if SPECS[stage].per_run else stages) / f"{stage}.json"


def _output_fingerprints(stage: str, cfg: Config) -> dict[str, str]:
    return {str(p): verify(p).fingerprint for p in SPECS[stage].outputs(cfg)}


def outputs_match(stage: str, cfg: Config, key: str) -> bool:
    """True when the outputs on disk are exactly those a run with `key` produced.

    A cached result is only trusted when this holds; otherwise (outputs deleted, corrupted, or
    overwritten by a run with another config) the stage reruns and refreshes the cache entry.
    """
    stamp = _stamp_path(stage, cfg)
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
        return recorded.get("key") == key and recorded.get("outputs") == _output_fingerprints(stage, cfg)
    except (ArtifactError, json.JSONDecodeError):
        return False


def record_stage(stage: str, cfg: Config, key: str) -> None:
    """Remember which key produced the outputs now on disk (after a successful run)."""
    payload = {"key": key, "outputs": _output_fingerprints(stage, cfg)}
    atomic_write_text(_stamp_path(stage, cfg), json.dumps(payload, indent=2, sort_keys=True))
