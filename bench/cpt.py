"""Benchmark 4: CPT step throughput of the DeepSpeed path vs a plain PyTorch loop, on CPU.

`deepspeed` is cprec_core.cpt.launcher.run_cpt exactly as the pipeline runs it (torchrun, one
process, DeepSpeed ZeRO-2, torch AdamW, WSA schedule); its tokens/s comes from train_log.jsonl's
per-interval rates after the first interval (start-up, first-step allocation and the final
checkpoint are outside them). `plain` is the loop a user writes: the same model and blocks,
torch.optim.AdamW with the same betas/eps/weight decay, the same LambdaLR schedule and gradient
clipping, fp32, timed over the same steps after the same warm-up interval. Both run on the same
packed blocks with the same micro batch. The tiny model runs always; SmolLM2-135M when
var/models/smollm2-135m exists (make base-model), in full mode only.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.behaviors import bench_config
from bench.common import measure
from bench.pack import model_dir

SMOLLM2 = Path(__file__).resolve().parent.parent / "var" / "models" / "smollm2-135m"


def _cfg(root: str, steps: int, log_every: int, micro_batch: int):
    cfg = bench_config(root)
    cfg.cpt.max_steps = steps
    cfg.cpt.log_every = log_every
    cfg.cpt.checkpoint_every = steps
    cfg.cpt.keep_checkpoints = 1
    cfg.cpt.probe_max_docs = 0
    cfg.cpt.micro_batch_size = micro_batch
    return cfg


def run_deepspeed(
    root: str, model: str, out: str, steps: int, log_every: int, micro_batch: int
) -> dict[str, Any]:
    """run_cpt (launcher + DeepSpeed engine); tokens/s from the log's post-warm-up intervals."""
    from cprec_core.cpt.launcher import run_cpt, work_dir_for

    cfg = _cfg(root, steps, log_every, micro_batch)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work_dir_for(Path(out)), ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_cpt(cfg, Path(model), Path(out), progress=False)
    seconds = time.perf_counter() - t0
    log = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    steady = [r["tokens_per_s"] for r in log[1:]]
    # equal tokens per interval: the harmonic mean is total tokens / total time
    rate = len(steady) / sum(1 / r for r in steady)
    shutil.rmtree(work_dir_for(Path(out)), ignore_errors=True)
    return {
        "seconds": seconds,
        "tokens_per_s": rate,
        "final_loss": summary.get("final_loss", log[-1]["loss"]),
        "losses": [r["loss"] for r in log],
    }


def run_plain(root: str, model: str, steps: int, log_every: int, micro_batch: int) -> dict[str, Any]:
    """The plain PyTorch loop on the same blocks, model, optimizer settings and schedule."""
    import numpy as np
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    from cprec_core.cpt.data import load_blocks
    from cprec_core.models import load_causal_lm
    from cprec_core.schedule import lr_lambda

    cfg = _cfg(root, steps, log_every, micro_batch)
    cpt = cfg.cpt
    torch.manual_seed(cpt.seed)
    blocks = load_blocks(Path(root))
    net, _ = load_causal_lm(Path(model))
    net.train()
    opt = torch.optim.AdamW(
        net.parameters(), lr=cpt.schedule.peak_lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=cpt.weight_decay
    )
    sched = LambdaLR(opt, lr_lambda(steps, cpt.schedule))
    order = np.random.default_rng(cpt.seed).permutation(len(blocks))
    seq_len = blocks.shape[1]
    t_start = time.perf_counter()
    losses, t_warm = [], 0.0
    for step in range(steps):
        if step == log_every:
            t_warm = time.perf_counter()
        idx = np.resize(order, (step + 1) * micro_batch)[step * micro_batch :]
        batch = torch.from_numpy(blocks[np.sort(idx)]).long()
        loss = net(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cpt.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    steady = time.perf_counter() - t_warm
    return {
        "seconds": time.perf_counter() - t_start,
        "tokens_per_s": (steps - log_every) * micro_batch * seq_len / steady,
        "final_loss": losses[-1],
    }


def _pair(
    root: Path, model: Path, work: Path, steps: int, log_every: int, micro_batch: int
) -> dict[str, Any]:
    args = {
        "root": str(root),
        "model": str(model),
        "steps": steps,
        "log_every": log_every,
        "micro_batch": micro_batch,
    }
    ds = measure("bench.cpt:run_deepspeed", {**args, "out": str(work / f"out-{model.name}")})
    plain = measure("bench.cpt:run_plain", args)
    return {
        "steps": steps,
        "warmup_steps": log_every,
        "micro_batch": micro_batch,
        "contenders": {"deepspeed": ds, "plain": plain},
        "ratio": ds["tokens_per_s"] / plain["tokens_per_s"],
    }


def _smollm2_root(pack_root: Path, work: Path) -> Path:
    """A run root holding pack's gold.corpus, packed with SmolLM2's own tokenizer."""
    from cprec_core.pack import pack_corpus
    from cprec_core.schema import GOLD_CORPUS

    root = work / "smollm2-root"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(GOLD_CORPUS.path(pack_root), GOLD_CORPUS.path(root))
    pack_corpus(bench_config(str(root)), SMOLLM2)
    return root


def run(work: Path, quick: bool, pack_root: Path) -> dict[str, Any]:
    """Tiny model (always) and SmolLM2-135M (full mode, when converted) on pack's blocks."""
    work.mkdir(parents=True, exist_ok=True)
    steps, log_every = (12, 4) if quick else (60, 10)
    out: dict[str, Any] = {"tiny": _pair(pack_root, model_dir(pack_root), work, steps, log_every, 8)}
    if quick:
        out["smollm2"] = {"skipped": "quick mode"}
    elif not SMOLLM2.is_dir():
        out["smollm2"] = {"skipped": f"{SMOLLM2} not found (make base-model)"}
    else:
        root = _smollm2_root(pack_root, work)
        out["smollm2"] = _pair(root, SMOLLM2, work, 6, 2, 2)
        shutil.rmtree(root, ignore_errors=True)
    return out
