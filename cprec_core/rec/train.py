"""The training loop of every trained recommender (PAPER.md §5): AdamW on next-item prediction,
early stopping on valid NDCG@10, a sealed checkpoint after every epoch (cprec_core.rec.resume).

Reads a `DomainData` and a `Recommender`; writes only the checkpoints in `work_dir`. Each user's
train sequence is one row with every position a target (the last `max_seq_len` + 1 items). A step
first lets the item encoder encode the items it touches (history, targets and sampled negatives:
each once, cprec_core.rec.item_encoder.TextItemEncoder.prepare), then scores and back-propagates
through whatever trains: adapter and user model, and the LLM's own weights in the encoder modes
that train it (at finetune.llm_lr). Valid is ranked after every epoch over the full catalogue,
encoded once with no_grad. On a GPU the forward passes run under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cprec_core.config import FinetuneConfig
from cprec_core.metrics import mean_metrics
from cprec_core.rec import resume
from cprec_core.rec.data import DomainData, DomainDataError, left_pad
from cprec_core.rec.ranking import autocast, model_score_fn, rank_users
from cprec_core.rec.user_model import Recommender, draw_negatives, full_softmax_loss, infonce_loss

EARLY_STOP_METRIC = "NDCG@10"
GRAD_CLIP = 1.0  # global norm; a common safe value for small transformers (SASRec/HLLM use 1.0 or none)
Loss = Literal["infonce", "full_softmax"]


class Interrupted(RuntimeError):
    """Training stopped on purpose after a checkpoint (`stop_after_epochs`, to test resuming)."""


def training_arrays(data: DomainData, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole train sequences, every position a target: inputs [N, L] (pad = n_items), targets [N, L]
    (pad = -1), from the last max_seq_len + 1 train items of each user with >= 2 of them."""
    seqs = [s[-(max_seq_len + 1) :] for s in data.train if len(s) >= 2]
    if not seqs:
        raise DomainDataError(f"domain {data.domain}: no user has >= 2 train events, nothing to train on")
    inputs = left_pad([s[:-1] for s in seqs], max_seq_len, data.n_items)
    targets = left_pad([s[1:] for s in seqs], max_seq_len, -1)
    return inputs, targets


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the weights that train (what a checkpoint and the saved model hold)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `trainable_state` weights; every trainable weight must be there, nothing else may be."""
    want = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(state) != want:
        missing, extra = sorted(want - set(state))[:3], sorted(set(state) - want)[:3]
        raise ValueError(f"saved weights do not fit the model: missing {missing}, unexpected {extra}")
    model.load_state_dict(state, strict=False)


def optimizer_for(model: Recommender, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW: the recommender's own weights at finetune.lr, the LLM's trained weights at llm_lr."""
    llm = {id(p) for p in model.llm_parameters()}
    own = [p for p in model.parameters() if p.requires_grad and id(p) not in llm]
    groups: list[dict[str, Any]] = [{"params": own, "lr": cfg.lr}]
    llm_params = [p for p in model.parameters() if p.requires_grad and id(p) in llm]
    if llm_params:
        groups.append({"params": llm_params, "lr": cfg.llm_lr})
    return torch.optim.AdamW(groups, lr=cfg.lr)


@contextlib.contextmanager
def _bar(show: bool, title: str) -> Iterator[Progress]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, disable=not show) as bar:
        yield bar


def train_model(
    model: Recommender,
    data: DomainData,
    cfg: FinetuneConfig,
    loss: Loss,
    seed: int,
    device: torch.device,
    work_dir: Path | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train to patience (at most max_epochs; llm_max_epochs while the LLM trains); leave the best
    valid epoch's weights loaded.

    With `work_dir`, an epoch's end is a sealed checkpoint and a rerun resumes from the newest one
    exactly (same weights, optimizer, RNG and data order as an uninterrupted run). `progress` shows
    a bar (epoch, step, loss, last valid NDCG@10); `report` gets one line per epoch (the run log).
    With an item LLM that trains and finetune.llm_warmup, training has two phases, each to patience
    (and at most max_epochs): first the LLM is held (read once per phase, not trained), then, from
    the best epoch so far, it trains too (LP-FT). Returns {"curve": [{epoch, train_loss, valid
    NDCG@10, valid Recall@10[, phase]}], "best_epoch", "epochs_run", "cut_short" (the last epoch
    was the best and the cap stopped it: not trained out), "seconds_per_epoch"} (seconds include
    the valid ranking after each epoch).
    """
    inputs, targets = training_arrays(data, cfg.max_seq_len)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = optimizer_for(model, cfg)
    has_llm = getattr(model.items, "llm", None) is not None  # an item LLM that trains
    warmup = cfg.llm_warmup and has_llm
    state = resume.Progress(0, [], -1.0, 0, 0, 0.0, {})
    best_weights = trainable_state(model)
    checkpoint = resume.load(work_dir) if work_dir is not None else None
    if checkpoint is not None:
        load_trainable(model, checkpoint.weights)
        opt.load_state_dict(checkpoint.optimizer)
        resume.set_rng_state(checkpoint.rng, gen)
        rng.bit_generator.state = checkpoint.progress.shuffle_state
        state, best_weights = checkpoint.progress, checkpoint.best_weights
    last_phase = 2 if warmup else 1
    n_steps = -(-len(inputs) // cfg.batch_size)
    stopped_by_cap = False
    with _bar(progress, f"train {data.domain}") as bar:
        task = bar.add_task(f"{data.domain} epoch {state.epoch + 1}", total=n_steps, info="")
        while True:
            if warmup:
                model.items.hold_llm(state.phase == 1)
            cap = cfg.epoch_cap(llm_trains=has_llm and not (warmup and state.phase == 1))
            while state.epoch - state.phase_start < cap and state.bad < cfg.patience:
                epoch = state.epoch + 1
                started = time.perf_counter()
                model.train()
                order = rng.permutation(len(inputs))
                total = 0.0
                bar.reset(task, total=n_steps, description=f"{data.domain} epoch {epoch}")
                for step, lo in enumerate(range(0, len(order), cfg.batch_size), start=1):
                    idx = order[lo : lo + cfg.batch_size]
                    x = torch.from_numpy(inputs[idx]).to(device)
                    y = torch.from_numpy(targets[idx]).to(device)
                    keep = y >= 0
                    sampled = (
                        draw_negatives(model.n_items, cfg.num_negatives, gen) if loss == "infonce" else None
                    )
                    touched = [x.clamp(max=model.n_items - 1).flatten(), y[keep]]
                    if loss == "full_softmax":  # every item is a candidate: encode the catalogue once
                        touched = [torch.arange(model.n_items, device=device)]
                    model.items.prepare(
                        torch.cat(touched if sampled is None else [*touched, sampled.to(device)])
                    )
                    with autocast(device):
                        preds, tgt = model(x)[keep], y[keep]
                        if loss == "infonce":
                            value = infonce_loss(model, preds, tgt, sampled)
                        elif loss == "full_softmax":
                            value = full_softmax_loss(model, preds, tgt)
                        else:
                            raise ValueError(f"loss {loss!r}: expected 'infonce' or 'full_softmax'")
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                    opt.step()
                    total += value.item()
                    last = f"valid NDCG@10 {state.curve[-1]['valid_NDCG@10']:.4f}" if state.curve else ""
                    bar.update(task, advance=1, info=f"loss {total / step:.4f} {last}")
                valid = mean_metrics(
                    rank_users(model_score_fn(model, cfg.max_seq_len, device), data, "valid"), [10]
                )
                seconds = time.perf_counter() - started
                point = {
                    "epoch": epoch,
                    "train_loss": total / n_steps,
                    "valid_NDCG@10": valid["NDCG@10"],
                    "valid_Recall@10": valid["Recall@10"],
                }
                state.curve.append(point | ({"phase": state.phase} if warmup else {}))
                state.epoch, state.seconds = epoch, state.seconds + seconds
                if valid[EARLY_STOP_METRIC] > state.best:
                    state.best, state.best_epoch, state.bad = valid[EARLY_STOP_METRIC], epoch, 0
                    best_weights = trainable_state(model)
                else:
                    state.bad += 1
                stopped_by_cap = state.epoch - state.phase_start >= cap and state.bad == 0
                if work_dir is not None:
                    state.shuffle_state = rng.bit_generator.state
                    resume.save(work_dir, state, trainable_state(model), best_weights, opt, gen)
                if report is not None:
                    held = " (LLM held)" if warmup and state.phase == 1 else ""
                    report(
                        f"{data.domain} epoch {epoch}{held}: loss {total / n_steps:.4f}, valid NDCG@10 "
                        f"{valid['NDCG@10']:.4f} (best {state.best:.4f} at epoch {state.best_epoch}), "
                        f"{seconds:.1f} s"
                    )
                if stop_after_epochs is not None and epoch >= stop_after_epochs:
                    raise Interrupted(f"stopped after epoch {epoch} (stop_after_epochs)")
            if state.phase >= last_phase:
                break
            # the LLM-held phase is over: continue from its best epoch with the LLM training too
            load_trainable(model, best_weights)
            state.phase, state.phase_start, state.bad = 2, state.epoch, 0
    load_trainable(model, best_weights)
    return {
        "curve": state.curve,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "cut_short": stopped_by_cap,
        "seconds_per_epoch": round(state.seconds / max(1, state.epoch), 3),
    }
