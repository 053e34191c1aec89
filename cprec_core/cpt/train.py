"""Continual pre-training: the DeepSpeed engine loop run by every launched process.

Reads GOLD_PACKED (blocks of pack.seq_len tokens), GOLD_PROBE (held-out perplexity) and the base
model directory. Writes, in the job's work dir: checkpoints/ (resumable, see checkpoint.py) and
train_log.jsonl; and, atomically, the output dir: the CPT model consolidated from the ZeRO
shards (save_pretrained, safetensors) + tokenizer + train_log.jsonl + loss_lr.png +
summary.json + _manifest.json. Implements PAPER.md §3 (WSA schedule over the optimizer steps)
and §4 (causal-LM loss, labels = input_ids).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict
from torch.optim.lr_scheduler import LambdaLR

from cprec_core.artifacts import atomic_dir, atomic_write_text, finish_manifest
from cprec_core.config import CPTConfig
from cprec_core.cpt import SUMMARY_FILE, checkpoint
from cprec_core.cpt.data import BlockSampler, Position, check_blocks, load_blocks
from cprec_core.cpt.dsconfig import fill_ds_config
from cprec_core.cpt.probe import perplexity, probe_texts, target_perplexity
from cprec_core.models import load_causal_lm
from cprec_core.schedule import lr_lambda

LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss_lr.png"


class JobSpec(BaseModel):
    """Everything one CPT job needs; written to JSON by the launcher, read by each process."""

    model_config = ConfigDict(extra="forbid")

    cpt: CPTConfig
    root: Path
    base_model_dir: Path
    out_dir: Path
    work_dir: Path
    probe_seq_len: int
    config_hash: str = ""
    stop_after_steps: int | None = None  # debug: stop (as if killed) after this step's checkpoint

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        return cls.model_validate_json(Path(path).read_text())


def _say(msg: str) -> None:
    """A progress line on rank 0's stdout (the launcher streams it to the parent)."""
    if dist.get_rank() == 0:
        print(f"[cpt] {msg}", flush=True)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _init_distributed() -> None:
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    backend = (
        "gloo" if get_accelerator().device_name() == "cpu" else get_accelerator().communication_backend_name()
    )
    deepspeed.init_distributed(dist_backend=backend)


def _probe_before(spec: JobSpec, model: torch.nn.Module, tokenizer: Any) -> dict[str, float] | None:
    """Base-model probe perplexities, computed once per job and kept in the work dir for resumes."""
    if spec.cpt.probe_max_docs == 0:
        return None
    path = spec.work_dir / "probe_before.json"
    if path.is_file():
        return json.loads(path.read_text())
    ppl = _probe(spec, model, tokenizer)
    atomic_write_text(path, json.dumps(ppl))
    return ppl


def _probe(spec: JobSpec, model: torch.nn.Module, tokenizer: Any) -> dict[str, float]:
    """Probe perplexities of `model` (moved to the GPU when there is one): all tokens, held-out item."""
    if torch.cuda.is_available():
        model.to("cuda")
    texts = probe_texts(spec.root, spec.cpt.probe_max_docs)
    args = (model, tokenizer, texts, spec.probe_seq_len, spec.cpt.micro_batch_size)
    return {"all_tokens": perplexity(*args), "held_out_item": target_perplexity(*args)}


def _lock_work_dir(work_dir: Path) -> int:
    """Rank 0 holds an exclusive lock on the work dir for its lifetime (released when it dies), so
    a second job, or an orphaned worker of a killed launcher, can never write the same checkpoints."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(
            f"{work_dir}: another CPT process is still running on it; wait for it or stop it first"
        ) from None
    return fd


def _trim_log(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Keep the log records up to the resumed step (a killed run may have logged beyond it)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["step"] <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def train(spec: JobSpec) -> dict[str, Any] | None:
    """Run (or resume) the CPT job on this process; rank 0 returns the summary, others None.

    The summary's tokens_per_s is over the training loop's wall time (checkpoint saves included,
    model loading and start-up excluded); train_log.jsonl has the per-interval rate.

    Returns None everywhere when stopped early by `spec.stop_after_steps`.
    """
    import deepspeed

    cpt = spec.cpt
    _init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    _seed_everything(cpt.seed)
    ckpt_dir = spec.work_dir / "checkpoints"
    log_path = spec.work_dir / LOG_FILE
    if rank == 0:
        _lock_work_dir(spec.work_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    blocks = load_blocks(spec.root)
    seq_len = blocks.shape[1]
    sampler = BlockSampler(len(blocks), cpt.micro_batch_size, world, rank, cpt.seed)
    model, tokenizer = load_causal_lm(spec.base_model_dir)
    check_blocks(
        blocks, spec.root, model.config.vocab_size, getattr(model.config, "max_position_embeddings", None)
    )
    ppl_before = _probe_before(spec, model, tokenizer) if rank == 0 else None
    if cpt.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ds_config = fill_ds_config(cpt, world)
    schedule = lr_lambda(cpt.max_steps, cpt.schedule)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
        lr_scheduler=lambda opt: LambdaLR(opt, schedule),
    )
    tokens_per_step = cpt.micro_batch_size * cpt.grad_accum_steps * world * seq_len
    _say(
        f"{len(blocks)} blocks x {seq_len} tokens, {world} process(es), "
        f"ZeRO-{cpt.zero_stage} {cpt.precision}, "
        f"{tokens_per_step} tokens per optimizer step, {cpt.max_steps} steps"
    )

    step, pos, elapsed_before = 0, Position(), 0.0
    resumed = checkpoint.load(engine, ckpt_dir)
    if resumed is not None:
        tag, state = resumed
        s = state["cprec"]
        if (s["world_size"], s["micro_batch_size"]) != (world, cpt.micro_batch_size):
            raise RuntimeError(
                f"{ckpt_dir / tag}: saved with {s['world_size']} processes x micro batch "
                f"{s['micro_batch_size']}, now {world} x {cpt.micro_batch_size}: the data order would "
                "differ; resume with the same layout or delete the checkpoints"
            )
        step, pos, elapsed_before = s["step"], Position(s["epoch"], s["batch"]), s["elapsed_s"]
        _say(f"resumed from {ckpt_dir / tag} at step {step} (epoch {pos.epoch}, batch {pos.batch})")
    records = _trim_log(log_path, step) if rank == 0 else []

    engine.train()
    t0 = time.perf_counter()
    t_last, tokens_last = t0, step * tokens_per_step
    while step < cpt.max_steps:
        lr = engine.get_lr()[0]  # the LR this step uses (the scheduler steps after it)
        loss_sum = torch.zeros((), device=engine.device)
        for _ in range(cpt.grad_accum_steps):
            batch = torch.from_numpy(blocks[sampler.indices(pos)]).long().to(engine.device)
            pos = sampler.advance(pos)
            loss = engine(input_ids=batch, labels=batch).loss
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach().float()
        step += 1
        dist.all_reduce(loss_sum)
        mean_loss = loss_sum.item() / (cpt.grad_accum_steps * world)
        if step % cpt.log_every == 0 or step == cpt.max_steps:
            now = time.perf_counter()
            grad_norm = engine.get_global_grad_norm()
            record = {
                "step": step,
                "loss": mean_loss,
                "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "tokens": step * tokens_per_step,
                "tokens_per_s": (step * tokens_per_step - tokens_last) / max(now - t_last, 1e-9),
                "elapsed": elapsed_before + now - t0,
            }
            t_last, tokens_last = now, record["tokens"]
            if rank == 0:
                records.append(record)
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                _say(
                    f"step {step}/{cpt.max_steps} loss {mean_loss:.4f} lr {lr:.3e} "
                    f"grad_norm {record['grad_norm'] or 0:.3f} tok/s {record['tokens_per_s']:.0f}"
                )
        if step % cpt.checkpoint_every == 0 or step == cpt.max_steps:
            client_state = {
                "cprec": {
                    "step": step,
                    "epoch": pos.epoch,
                    "batch": pos.batch,
                    "world_size": world,
                    "micro_batch_size": cpt.micro_batch_size,
                    "elapsed_s": elapsed_before + time.perf_counter() - t0,
                }
            }
            tag = checkpoint.save(engine, ckpt_dir, step, client_state, cpt.keep_checkpoints)
            _say(f"checkpoint {tag} saved")
        if spec.stop_after_steps is not None and step >= spec.stop_after_steps and step < cpt.max_steps:
            _say(f"stopping after step {step} (stop_after_steps)")
            return None

    if rank != 0:
        return None
    wall = elapsed_before + time.perf_counter() - t0
    return _export(spec, ckpt_dir, checkpoint.tag_for(step), tokenizer, records, ppl_before, world, wall)


def _export(
    spec: JobSpec,
    ckpt_dir: Path,
    tag: str,
    tokenizer: Any,
    records: list[dict[str, Any]],
    ppl_before: dict[str, float] | None,
    world: int,
    wall: float,
) -> dict[str, Any]:
    """Rank 0: consolidate the ZeRO shards of `tag` into an fp32 HF model and write the output dir."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    model, _ = load_causal_lm(spec.base_model_dir)
    _load_consolidated(model, state)
    ppl_after = _probe(spec, model, tokenizer) if spec.cpt.probe_max_docs else None
    last = records[-1]
    summary = {
        "steps": last["step"],
        "tokens": last["tokens"],
        "final_loss": last["loss"],
        "tokens_per_s": last["tokens"] / wall,
        "wall_time_s": wall,
        "processes": world,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else None,
        "zero_stage": spec.cpt.zero_stage,
        "precision": spec.cpt.precision,
        # every token of the probe documents (train-history lines included)
        "probe_perplexity_before": ppl_before and ppl_before["all_tokens"],
        "probe_perplexity_after": ppl_after and ppl_after["all_tokens"],
        # only the held-out item's text, given the user's train history: the behaviour probe
        "probe_target_perplexity_before": ppl_before and ppl_before["held_out_item"],
        "probe_target_perplexity_after": ppl_after and ppl_after["held_out_item"],
        "base_model_dir": str(spec.base_model_dir),
        "checkpoint": str(ckpt_dir / tag),
    }
    with atomic_dir(spec.out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(spec.work_dir / LOG_FILE, tmp / LOG_FILE)
        plot_log(records, tmp / PLOT_FILE)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        finish_manifest(tmp, "model.cpt", summary["steps"], None, spec.config_hash, summary)
    _say(f"saved {spec.out_dir}: {json.dumps(summary)}")
    return summary


def _load_consolidated(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load consolidated weights; the only keys allowed missing are tied aliases of loaded ones."""
    result = model.load_state_dict(state, strict=False)
    loaded_ptrs = {model.get_parameter(k).data_ptr() for k in state if k in dict(model.named_parameters())}
    untied = [k for k in result.missing_keys if model.get_parameter(k).data_ptr() not in loaded_ptrs]
    if untied or result.unexpected_keys:
        raise RuntimeError(
            f"consolidated checkpoint does not match the base model: missing {untied}, "
            f"unexpected {result.unexpected_keys}"
        )


def plot_log(records: list[dict[str, Any]], path: Path) -> None:
    """Loss and learning rate against the optimizer step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax_loss.plot(steps, [r["loss"] for r in records], marker=".")
    ax_loss.set_ylabel("train loss")
    ax_lr.plot(steps, [r["lr"] for r in records], color="tab:orange", marker=".")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
