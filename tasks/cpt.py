"""Task `cpt`: continual pre-training with DeepSpeed ZeRO and the WSA schedule (PAPER.md §3-4).

The task builds and supervises the standard launcher command (deepspeed/torchrun); the training
itself runs in the launched processes, so the same task drives one CPU process or a cluster.
"""

from __future__ import annotations

from typing import Any

from cprec_core.config import Config
from cprec_core.paths import base_model_dir, cpt_dir
from tasks.common import stage_run, stage_task


@stage_task("cpt")
def cpt(cfg: Config, key: str) -> dict[str, Any]:
    """Continually pre-train the base model on the packed corpus; publish the loss curve."""
    from cprec_core.cpt.launcher import run_cpt

    with stage_run("cpt", cfg, key) as run:
        summary = run_cpt(cfg, base_model_dir(cfg), cpt_dir(cfg), progress=False, report=run.logger.info)
        run.summary(summary, "Continual pre-training")
    return summary
