"""Resumable CPT checkpoints that a kill mid-save can never make resume trust.

Writes <work_dir>/checkpoints/step<NNNNNNNN>/ (DeepSpeed's model, optimizer and scheduler states,
one RNG-state file per rank, client_state with the data position) and, only after every rank has
finished writing, a `_manifest.json` listing each file's size and sha256
(cprec_core.artifacts.finish_manifest) plus DeepSpeed's `latest` marker. Reads them back only
after verifying that manifest; a missing or mismatched one means "incomplete or corrupt": warn
and fall back to the previous checkpoint. Implements DESIGN.md stage 5 ("resume restores model,
optimizer, scheduler position and data position").
"""

from __future__ import annotations

import io
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cprec_core.artifacts import ArtifactError, atomic_write_bytes, atomic_write_text, finish_manifest, verify

log = logging.getLogger(__name__)

TAG = re.compile(r"^step(\d{8})$")


def tag_for(step: int) -> str:
    """Checkpoint tag (directory name) of an optimizer step."""
    return f"step{step:08d}"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states of this process, as tensors and plain values only, so
    they reload with `torch.load(weights_only=True)` (no unpickling of arbitrary objects)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_file(tag_dir: Path, rank: int) -> Path:
    return tag_dir / f"rng_rank{rank}.pt"


def save(engine: Any, ckpt_dir: Path, step: int, client_state: dict[str, Any], keep: int) -> str:
    """Collective: save a checkpoint of `step` on every rank, seal it, prune to the `keep` newest."""
    rank = dist.get_rank()
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    if rank == 0 and tag_dir.exists():  # leftover of a run killed while saving this very step
        shutil.rmtree(tag_dir)
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    buf = _torch_bytes(rng_state())
    atomic_write_bytes(_rng_file(tag_dir, rank), buf)
    dist.barrier()
    if rank == 0:
        finish_manifest(tag_dir, "cpt.checkpoint", step, None, "", {"step": step})
        atomic_write_text(ckpt_dir / "latest", tag)
        for old in sorted(_tag_dirs(ckpt_dir), reverse=True)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return tag


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _tag_dirs(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and TAG.match(p.name))


def newest_good(ckpt_dir: Path) -> str | None:
    """Tag of the newest checkpoint whose manifest verifies (sizes and hashes); None if none.

    Each newer one that fails verification is reported with a warning and skipped.
    """
    for tag_dir in reversed(_tag_dirs(ckpt_dir)):
        try:
            verify(tag_dir, deep=True)
        except ArtifactError as e:
            log.warning(
                "checkpoint %s is incomplete or corrupt (%s): falling back to an older one", tag_dir, e
            )
            continue
        return tag_dir.name
    return None


def load(engine: Any, ckpt_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """Collective: load the newest good checkpoint (chosen on rank 0) into `engine` and restore
    this rank's RNG state; newer, untrusted ones are deleted (so pruning never keeps them over
    good ones). Returns (tag, client_state), or None when there is none to resume."""
    choice = [None]
    if dist.get_rank() == 0:
        choice = [newest_good(ckpt_dir)]
        for skipped in _tag_dirs(ckpt_dir):  # the untrusted ones newer than the choice
            if choice[0] is None or skipped.name > choice[0]:
                shutil.rmtree(skipped)
    dist.broadcast_object_list(choice, src=0)
    tag = choice[0]
    if tag is None:
        return None
    rng_path = _rng_file(ckpt_dir / tag, dist.get_rank())
    if not rng_path.is_file():
        raise RuntimeError(
            f"{ckpt_dir / tag}: no RNG state for rank {dist.get_rank()}: it was saved with a different "
            "number of processes; resume with the same cpt.launcher layout or delete the checkpoints"
        )
    path, client_state = engine.load_checkpoint(
        str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise RuntimeError(f"{ckpt_dir / tag}: DeepSpeed could not load this checkpoint")
    set_rng_state(torch.load(rng_path, weights_only=True))
    return tag, client_state
