"""Every place under a run root (`paths.root`), named once: the stages, the CLI and the tests
ask here instead of joining path parts themselves.

    <root>/bronze, silver, gold, quarantine    artifacts (cprec_core/schema.py names them)
    <root>/models/base/tiny                    the tiny base LLM built for this root
    <root>/models/cpt/<run>                    the CPT checkpoint of a run
    <root>/models/rec/<run>                    the fine-tuned recommenders of a run
    <root>/reports/<run>[-experiment]          evaluation and experiment reports
    <root>/serving/<run>                       recommendations to deploy
    <root>/cache/<kind>                        item embeddings and LLM states, keyed inside
    <root>/state                               stage stamps, raw fingerprints, locks, Prefect results
    <root>/tmp                                 scratch, swept under the run lock
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cprec_core.config import Config


def base_model_dir(cfg: Config) -> Path:
    """The base LLM: cfg.model.path, or the tiny model built for this run root."""
    return Path(cfg.model.path) if cfg.model.path else cfg.root / "models" / "base" / "tiny"


def cpt_dir(cfg: Config) -> Path:
    """Where the CPT checkpoint of this run lives."""
    return cfg.root / "models" / "cpt" / cfg.name


def rec_dir(cfg: Config) -> Path:
    """The finetune stage's output directory: models/rec/<run>/."""
    return cfg.root / "models" / "rec" / cfg.name


def report_dir(cfg: Config) -> Path:
    """Where the evaluation report of this run lives."""
    return cfg.root / "reports" / cfg.name


def experiment_dir(cfg: Config) -> Path:
    """Where an experiment's combined report lives: <root>/reports/<name>-experiment/."""
    return cfg.root / "reports" / f"{cfg.name}-experiment"


def serving_dir(cfg: Config) -> Path:
    """Where this run's recommendations live (GOLD_RECOMMENDATIONS under it)."""
    return cfg.root / "serving" / cfg.name


def cache_dir(cfg: Config, kind: Literal["item_emb", "item_states", "corpus"]) -> Path:
    """Reusable derived data of a kind (its entries are keyed by what produced them)."""
    return cfg.root / "cache" / kind


def state_dir(root: Path) -> Path:
    """Bookkeeping: stage stamps, raw-file fingerprints, locks, persisted Prefect results."""
    return Path(root) / "state"


def scratch_dir(root: Path) -> Path:
    """Scratch space of running stages; what a killed writer left here is swept under the run lock."""
    return Path(root) / "tmp"
