"""Task `recommend`: top-K items per user from the best fine-tuned variant on valid (or a chosen one)."""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.paths import base_model_dir, cpt_dir, serving_dir
from cprec_core.schema import GOLD_RECOMMENDATIONS
from tasks.common import markdown_table, stage_run, stage_task


@stage_task("recommend")
def recommend(cfg: Config, key: str) -> dict[str, Any]:
    """Write gold recommendations for every evaluated domain's users; publish what was served."""
    from cprec_core.recommend import build_recommendations

    with stage_run("recommend", cfg, key) as run:
        summary = build_recommendations(cfg, cpt_dir(cfg), base_model_dir(cfg))
        run.validate(GOLD_RECOMMENDATIONS, serving_dir(cfg))
        rows = [
            {"domain": d, **{k: v for k, v in s.items() if k != "run_dir"}}
            for d, s in summary["served"].items()
        ]
        run.publish("served-models", markdown_table(rows), "the model serving each domain's recommendations")
    return summary
