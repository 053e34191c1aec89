"""Task `corpus`: silver sequences → gold prompt corpora via the unified template."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.schema import GOLD_CORPUS, GOLD_PROBE
from tasks.common import stage_run, stage_task


@stage_task("corpus")
def corpus(cfg: Config, key: str) -> dict[str, Any]:
    """Render domain and mixed documents, mix them, write the CPT corpus and probe documents."""
    from cprec_core.corpus import build_corpus

    with stage_run("corpus", cfg, key) as run:
        summary = build_corpus(cfg, progress=run.progress)
        run.validate(GOLD_CORPUS)
        run.validate(GOLD_PROBE)
        run.summary(summary, "Corpus")
    return summary
