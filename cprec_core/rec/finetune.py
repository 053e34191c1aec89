"""The finetune stage: train (or build) each downstream recommender variant and rank its users
(PAPER.md §5; DESIGN.md step 6).

Reads silver.events + silver.items of each downstream domain, the CPT checkpoint and the base
model. Writes, per (domain, variant, seed), `<root>/models/rec/<run>/<domain>/<variant>/seed=<s>/`
(atomically, with a manifest): `ranks/` (REC_RANKS: valid and test rank of every user),
`results.json` (data counts, training curve, best epoch, mean metrics) and, for trained
variants, `model.safetensors` (user model + adapter, without the frozen LLM embeddings, which
are cached separately by cprec_core.rec.item_encoder). A run whose key (config, data, model
fingerprints, code version) is unchanged is reused, not retrained.

Variants:
- `cpt`  / `base`: frozen item embeddings from the CPT / base LLM, standardised per dimension over
  the domain's catalogue (item_encoder.standardize) + adapter + causal transformer user model,
  InfoNCE with in-batch and sampled negatives; identical hyperparameters and budget.
- `zero-shot`: the CPT LLM's (standardised) item embeddings, no training (cprec_core.rec.zero_shot).
- `popularity`: train-split counts. `sasrec`: id embeddings, full softmax (cprec_core.rec.baselines).
Every trained variant sees each user's train sequence with every position a target, and stops
early on valid NDCG@10 (full ranking); the test split is ranked once, with the best weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from rich.progress import track
from safetensors.torch import save_file

from cprec_core.artifacts import (
    ArtifactError,
    atomic_dir,
    code_version,
    config_hash,
    finish_manifest,
    verify,
    write_table,
)
from cprec_core.config import Config, FinetuneConfig
from cprec_core.locks import holds_run_lock
from cprec_core.metrics import mean_metrics
from cprec_core.prompts import item_text
from cprec_core.rec.baselines import build_sasrec, popularity_score_fn
from cprec_core.rec.data import DomainData, DomainDataError, left_pad, load_domain
from cprec_core.rec.item_encoder import (
    TextItemEncoder,
    check_encoder_mode,
    checkpoint_fingerprint,
    item_embeddings,
    standardize,
)
from cprec_core.rec.ranking import ScoreFn, model_score_fn, rank_users
from cprec_core.rec.user_model import SequenceRecommender, full_softmax_loss, infonce_loss
from cprec_core.rec.zero_shot import zero_shot_score_fn
from cprec_core.schema import REC_RANKS, SILVER_EVENTS, SILVER_ITEMS

VARIANTS = ("cpt", "base", "zero-shot", "popularity", "sasrec")
LLM_VARIANTS = {"cpt": "cpt", "base": "base", "zero-shot": "cpt"}  # variant -> which LLM encodes items
EARLY_STOP_METRIC = "NDCG@10"
GRAD_CLIP = 1.0  # global norm; a common safe value for small transformers (SASRec/HLLM use 1.0 or none)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU runs are then bit-for-bit repeatable)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rec_dir(cfg: Config) -> Path:
    """The finetune stage's output directory: models/rec/<run>/."""
    return cfg.root / "models" / "rec" / cfg.name


def run_dir(cfg: Config, domain: str, variant: str, seed: int) -> Path:
    return rec_dir(cfg) / domain / variant / f"seed={seed}"


def _model_dir(variant: str, cpt_dir: Path | None, base_dir: Path | None) -> Path:
    which = LLM_VARIANTS[variant]
    path = cpt_dir if which == "cpt" else base_dir
    if path is None:
        raise ValueError(f"variant {variant!r} needs the {which} model directory, got None")
    return Path(path)


@lru_cache(maxsize=16)
def _fingerprint_cached(path: str, stamp: tuple) -> str:
    return checkpoint_fingerprint(Path(path))


def _model_fingerprint(model_dir: Path) -> str:
    """checkpoint_fingerprint, memoised on the files' sizes and mtimes (big checkpoints hash slowly)."""
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(model_dir).glob("*")))
    return _fingerprint_cached(str(Path(model_dir).resolve()), stamp)


def run_key(
    cfg: Config, domain: str, variant: str, seed: int, cpt_dir: Path | None, base_dir: Path | None
) -> str:
    """What a run's result depends on: config, silver data, the LLM it encodes with, code version."""
    parts: dict[str, Any] = {
        "finetune": cfg.finetune.model_dump(mode="json"),
        "max_title_chars": cfg.corpus.max_title_chars,
        "domain": domain,
        "variant": variant,
        "seed": seed,
        "events": verify(SILVER_EVENTS.path(cfg.root)).fingerprint,
        "items": verify(SILVER_ITEMS.path(cfg.root)).fingerprint,
        "code": code_version(),
    }
    if variant in LLM_VARIANTS:
        parts["llm"] = _model_fingerprint(_model_dir(variant, cpt_dir, base_dir))
    return config_hash(parts)


def training_arrays(data: DomainData, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole train sequences, every position a target: inputs [N, L] (pad = n_items), targets [N, L]
    (pad = -1), from the last max_seq_len + 1 train items of each user with >= 2 of them."""
    seqs = [s[-(max_seq_len + 1) :] for s in data.train if len(s) >= 2]
    if not seqs:
        raise DomainDataError(f"domain {data.domain}: no user has >= 2 train events, nothing to train on")
    inputs = left_pad([s[:-1] for s in seqs], max_seq_len, data.n_items)
    targets = left_pad([s[1:] for s in seqs], max_seq_len, -1)
    return inputs, targets


def train_model(
    model: SequenceRecommender,
    data: DomainData,
    cfg: FinetuneConfig,
    loss: Literal["infonce", "full_softmax"],
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> dict[str, Any]:
    """AdamW on next-item prediction; early stopping on valid NDCG@10; leaves the best weights loaded.

    Returns {"curve": [{epoch, train_loss, valid NDCG@10, valid Recall@10}], "best_epoch", "epochs_run"}.
    """
    inputs, targets = training_arrays(data, cfg.max_seq_len)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    best, best_epoch, bad, best_state = -1.0, 0, 0, copy.deepcopy(model.state_dict())
    curve: list[dict[str, float]] = []
    epochs = track(range(1, cfg.max_epochs + 1), f"train {data.domain}", disable=not progress)
    for epoch in epochs:
        model.train()
        order = rng.permutation(len(inputs))
        total, n_batches = 0.0, 0
        for lo in range(0, len(order), cfg.batch_size):
            idx = order[lo : lo + cfg.batch_size]
            x = torch.from_numpy(inputs[idx]).to(device)
            y = torch.from_numpy(targets[idx]).to(device)
            keep = y >= 0
            preds, tgt = model(x)[keep], y[keep]
            if loss == "infonce":
                value = infonce_loss(model, preds, tgt, cfg.num_negatives, gen)
            elif loss == "full_softmax":
                value = full_softmax_loss(model, preds, tgt)
            else:
                raise ValueError(f"loss {loss!r}: expected 'infonce' or 'full_softmax'")
            opt.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            total += value.item()
            n_batches += 1
        valid = mean_metrics(rank_users(model_score_fn(model, cfg.max_seq_len, device), data, "valid"), [10])
        curve.append(
            {
                "epoch": epoch,
                "train_loss": total / n_batches,
                "valid_NDCG@10": valid["NDCG@10"],
                "valid_Recall@10": valid["Recall@10"],
            }
        )
        if valid[EARLY_STOP_METRIC] > best:
            best, best_epoch, bad = valid[EARLY_STOP_METRIC], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return {"curve": curve, "best_epoch": best_epoch, "epochs_run": len(curve)}


def _ranks_table(data: DomainData, ranks: dict[str, np.ndarray]) -> pa.Table:
    cols: dict[str, list] = {"user_id": [], "split": [], "target_item_id": [], "rank": []}
    for split, r in ranks.items():
        cols["user_id"] += data.user_ids
        cols["split"] += [split] * data.n_users
        cols["target_item_id"] += [data.item_ids[i] for i in data.target(split)]
        cols["rank"] += r.tolist()
    return pa.table(cols, schema=REC_RANKS.schema)


def finetune_variant(
    cfg: Config,
    domain: str,
    variant: str,
    seed: int,
    cpt_dir: Path | None,
    base_dir: Path | None,
    out_dir: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Build/train one variant on one domain with one seed; rank valid and test users; save.

    Returns the content of results.json plus "out_dir" (the run directory; its REC_RANKS table
    holds every user's valid and test rank: cprec_core.artifacts.read_table(REC_RANKS, out_dir)).
    """
    if variant not in VARIANTS:
        raise ValueError(f"finetune.variants: unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    if variant in ("cpt", "base"):
        check_encoder_mode(cfg.finetune)
    key = run_key(cfg, domain, variant, seed, cpt_dir, base_dir)
    fcfg = cfg.finetune
    data = load_domain(cfg.root, domain)
    seed_everything(seed)
    device = pick_device()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "domain": domain,
        "variant": variant,
        "seed": seed,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_train_events": data.n_train_events,
        "curve": [],
        "best_epoch": None,
        "epochs_run": 0,
        "trainable_params": 0,
    }
    model: SequenceRecommender | None = None
    score_fn: ScoreFn
    if variant in LLM_VARIANTS:
        model_dir = _model_dir(variant, cpt_dir, base_dir)
        texts = data.texts(lambda t, c: item_text(t, c, cfg.corpus.max_title_chars))
        emb = standardize(
            item_embeddings(model_dir, texts, fcfg, cfg.root / "cache" / "item_emb", device, progress)
        )
        results["item_encoder"] = {"model_dir": str(model_dir), "llm_hidden": emb.shape[1]}
    if variant == "zero-shot":
        score_fn = zero_shot_score_fn(emb, fcfg.max_seq_len)
    elif variant == "popularity":
        score_fn = popularity_score_fn(data)
    else:
        if variant == "sasrec":
            model = build_sasrec(data.n_items, fcfg)
        else:
            model = SequenceRecommender(TextItemEncoder(emb, fcfg.hidden_size), data.n_items, fcfg, "cosine")
        results["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        loss: Literal["infonce", "full_softmax"] = "full_softmax" if variant == "sasrec" else "infonce"
        results.update(train_model(model, data, fcfg, loss, seed, device, progress))
        score_fn = model_score_fn(model, fcfg.max_seq_len, device)
    ranks = {split: rank_users(score_fn, data, split) for split in ("valid", "test")}
    results["seconds"] = round(time.perf_counter() - started, 3)
    for split, r in ranks.items():
        results[split] = mean_metrics(r, cfg.evaluate.ks)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_table(REC_RANKS, tmp, _ranks_table(data, ranks))
        if model is not None:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                tmp / "model.safetensors",
            )
        (tmp / "results.json").write_text(json.dumps(results, indent=2))
        finish_manifest(tmp, "rec.run", 2 * data.n_users, None, key, {"variant": variant, "seed": seed})
    return {**results, "out_dir": str(out_dir)}


def load_run(out_dir: Path) -> dict[str, Any]:
    """results.json of a finished run (manifest verified)."""
    verify(out_dir)
    return {**json.loads((Path(out_dir) / "results.json").read_text()), "out_dir": str(out_dir)}


@holds_run_lock
def finetune_run(
    cfg: Config, cpt_dir: Path | None, base_dir: Path | None, progress: bool = False
) -> dict[str, Any]:
    """Every (downstream domain, variant, seed) of the config; unchanged runs are reused.

    Writes models/rec/<run>/ (one sub-directory per run, and a top `_manifest.json` over all of
    them, written last). Returns {"rec_dir", "runs": [results], "reused": n, "trained": n}.
    """
    top = rec_dir(cfg)
    top.mkdir(parents=True, exist_ok=True)
    (top / "_manifest.json").unlink(missing_ok=True)  # the directory is incomplete until the end
    runs, reused = [], 0
    plan = [
        (d, v, s) for d in cfg.domains.downstream for v in cfg.finetune.variants for s in cfg.evaluate.seeds
    ]
    for domain, variant, seed in plan:
        out = run_dir(cfg, domain, variant, seed)
        key = run_key(cfg, domain, variant, seed, cpt_dir, base_dir)
        try:
            hit = verify(out).config_hash == key
        except ArtifactError:
            hit = False
        if hit:
            runs.append(load_run(out))
            reused += 1
        else:
            runs.append(finetune_variant(cfg, domain, variant, seed, cpt_dir, base_dir, out, progress))
    keys = sorted(f"{r['domain']}/{r['variant']}/{r['seed']}" for r in runs)
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    finish_manifest(top, "rec.runs", len(runs), None, digest, {"runs": keys})
    return {"rec_dir": str(top), "runs": runs, "reused": reused, "trained": len(runs) - reused}
