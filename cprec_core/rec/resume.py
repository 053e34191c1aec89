"""Resumable fine-tuning: a sealed checkpoint after every epoch, so a killed run continues exactly.

Writes `<work_dir>/epoch<NNNN>/` atomically (cprec_core.artifacts.atomic_dir; its manifest lists
every file's size and sha256): `weights.safetensors` (the trainable weights now),
`best.safetensors` (those of the best valid epoch so far), `optimizer.pt`, `rng.pt` (torch's global
generator, which drives dropout, the negative-sampling generator, CUDA's when present) and
`state.json` (epochs done, the curve, the best score and epoch, epochs without improvement, the
shuffling generator's state, seconds trained). Only the newest checkpoint is kept. Reads back the
newest whose manifest verifies, hashes included; a newer, broken one (a kill mid-save) is removed
and the previous one is used, as CPT does (cprec_core.cpt.checkpoint). The caller names the work
dir after the run key, so a run with another configuration never resumes from it.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cprec_core.artifacts import ArtifactError, atomic_dir, finish_manifest, verify

log = logging.getLogger(__name__)

PREFIX = "epoch"


@dataclass
class Progress:
    """Where training stands after `epoch` epochs."""

    epoch: int
    curve: list[dict[str, float]]
    best: float
    best_epoch: int
    bad: int
    seconds: float
    shuffle_state: dict[str, Any]  # numpy Generator.bit_generator.state
    phase: int = 1  # 1: the item LLM held (finetune.llm_warmup) or no item LLM, 2: the item LLM trains
    phase_start: int = 0  # epochs done when the phase began (finetune.max_epochs bounds each phase)


@dataclass
class Checkpoint:
    """What `load` gives back."""

    progress: Progress
    weights: dict[str, torch.Tensor]
    best_weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]


def _epoch_dirs(work_dir: Path) -> list[Path]:
    if not work_dir.is_dir():
        return []
    return sorted(p for p in work_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "negatives": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["negatives"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    work_dir: Path,
    progress: Progress,
    weights: dict[str, torch.Tensor],
    best_weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> Path:
    """Seal the checkpoint of `progress.epoch`, then drop older ones."""
    final = Path(work_dir) / f"{PREFIX}{progress.epoch:04d}"
    with atomic_dir(final) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, tmp / "weights.safetensors")
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in best_weights.items()}, tmp / "best.safetensors"
        )
        (tmp / "optimizer.pt").write_bytes(_torch_bytes(optimizer.state_dict()))
        (tmp / "rng.pt").write_bytes(_torch_bytes(rng_state(generator)))
        (tmp / "state.json").write_text(json.dumps(asdict(progress)))
        finish_manifest(tmp, "rec.checkpoint", progress.epoch, None, "")
    for old in _epoch_dirs(Path(work_dir)):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load(work_dir: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies, or None; broken newer ones are removed with a warning."""
    for epoch_dir in reversed(_epoch_dirs(Path(work_dir))):
        try:
            verify(epoch_dir, deep=True)
        except ArtifactError as e:
            log.warning(
                "fine-tuning checkpoint %s is incomplete or corrupt (%s): using an older one", epoch_dir, e
            )
            shutil.rmtree(epoch_dir, ignore_errors=True)
            continue
        return Checkpoint(
            Progress(**json.loads((epoch_dir / "state.json").read_text())),
            load_file(epoch_dir / "weights.safetensors"),
            load_file(epoch_dir / "best.safetensors"),
            torch.load(epoch_dir / "optimizer.pt", weights_only=True),
            torch.load(epoch_dir / "rng.pt", weights_only=True),
        )
    return None
