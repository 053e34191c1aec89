"""bench/gpu_check.py's CPU path (`--smoke`): the GPU check's own code runs end to end and writes
its JSON and log. The GPU numbers themselves are BENCHMARKS.md's, measured where a GPU was lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_step_and_writes_its_numbers(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(tmp_path)]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=1200)
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["device"] == "cpu" and result["smoke"] is True
    for zero, steps in (("cpt_zero2", 4), ("cpt_zero3", 4)):
        assert result[zero]["steps"] == steps and result[zero]["tokens_per_s"] > 0
        assert (
            result[zero]["tflops_per_s"] > 0 and result[zero]["mfu"] is None
        )  # no peak to divide by on a CPU
    ft = result["finetune_full_one_epoch"]
    assert ft["seconds_per_epoch"] > 0 and 0 <= ft["valid_ndcg_at_10"] <= 1 and ft["llm_params_trained"] > 0
    assert "bench.gpu_check --smoke" in result["command"]
    assert "stage cpt" in (tmp_path / "gpu_check.log").read_text()
