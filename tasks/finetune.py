"""Task `finetune`: per downstream domain, every variant and seed of the recommender."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.paths import base_model_dir, cpt_dir
from tasks.common import stage_run, stage_task


@stage_task("finetune")
def finetune(cfg: Config, key: str) -> dict[str, Any]:
    """Train every variant (LLM recommenders, zero-shot, popularity, SASRec) per domain and seed."""
    from cprec_core.rec.finetune import finetune_run

    with stage_run("finetune", cfg, key) as run:
        summary = finetune_run(
            cfg, cpt_dir(cfg), base_model_dir(cfg), progress=run.progress, report=run.logger.info
        )
        run.summary({k: v for k, v in summary.items() if k not in ("runs", "selection")}, "Fine-tuning")
    return summary
