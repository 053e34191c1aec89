"""Task `pack`: the base model (tiny model trained on the corpus, or a local LLM) and the packed
token blocks that CPT trains on."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.paths import base_model_dir
from cprec_core.schema import GOLD_PACKED
from tasks.common import stage_run, stage_task


@stage_task("pack")
def pack(cfg: Config, key: str) -> dict[str, Any]:
    """Make sure the base model exists, then tokenize and pack the corpus into seq_len blocks."""
    from cprec_core.models import ensure_base_model
    from cprec_core.pack import corpus_texts, pack_corpus

    with stage_run("pack", cfg, key) as run:
        model_dir = ensure_base_model(cfg, lambda: corpus_texts(cfg), run.logger.info)
        summary = pack_corpus(cfg, model_dir, progress=run.progress)
        summary["base_model"] = str(base_model_dir(cfg))
        run.validate(GOLD_PACKED)
        run.summary(summary, "Tokenize + pack")
    return summary
