"""CPT training: DeepSpeed engine loop and launcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cprec_core.artifacts import ArtifactError

SUMMARY_FILE = "summary.json"


def read_summary(out_dir: Path) -> dict[str, Any]:
    """The summary a finished CPT run wrote beside its model in `out_dir` (steps, tokens, loss, probe
    perplexities); an ArtifactError naming the file and the stage to run when there is none."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{path}: no CPT summary (the checkpoint is missing or incomplete): run the cpt stage"
        )
    return json.loads(path.read_text())
