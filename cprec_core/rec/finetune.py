"""The finetune stage: train (or build) each downstream recommender variant and rank its users
(PAPER.md §5; DESIGN.md step 6).

Reads silver.events + silver.items of each downstream domain, the CPT checkpoint and the base
model. Writes `<root>/models/rec/<run>/`: per (domain, variant, seed) a run directory
`<domain>/<variant>/[<choice>/]seed=<s>/` (atomically, with a manifest) holding `ranks/`
(REC_RANKS: valid and test rank of every user, history masked and unmasked), `results.json` (data
counts, training curve, best epoch, seconds per epoch, mean metrics) and, for trained variants,
`model.safetensors` (the weights that trained: user model, adapter, id vectors and, in the encoder
modes that train it, the LLM's trained weights) plus, in `lora` mode, `lora/` (the adapters in
peft's format). At the top, `runs.json` lists the runs the evaluate stage reads, and each
(domain, variant) with a `finetune.select` grid gets `selection.json`. A run whose key (config,
data, checkpoint fingerprint, code version) is unchanged is reused; a killed run resumes from its
last epoch (cprec_core.rec.resume; checkpoints under `.work/`).

Variants (finetune.variants):
- `cpt` / `base` (optionally `-frozen`, `-full`, `-lora`, `-top`: the encoder mode, else
  finetune.encoder_mode): the LLM recommender on the CPT / base checkpoint
  (cprec_core.rec.build); identical hyperparameters and budget; InfoNCE with in-batch and sampled
  negatives.
- `zero-shot` / `zero-shot-base`: the CPT / base checkpoint's standardised frozen item embeddings,
  no training (cprec_core.rec.zero_shot).
- `popularity`: train-split counts. `sasrec`: id embeddings, full softmax (cprec_core.rec.baselines).
Every trained variant trains to patience (finetune.patience epochs without a better valid NDCG@10,
at most finetune.max_epochs); the test split is ranked once, with the best weights. Design
choices in finetune.select are picked per (domain, variant) on valid NDCG@10 with the first seed
(`select_on_valid`); test metrics play no part in it.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import save_file

from cprec_core.artifacts import (
    ArtifactError,
    atomic_dir,
    atomic_write_text,
    config_hash,
    finish_manifest,
    identity,
    model_fingerprint,
    verify,
    write_table,
)
from cprec_core.config import Config, check_variant, choices_for
from cprec_core.locks import holds_run_lock
from cprec_core.metrics import mean_metrics
from cprec_core.paths import cache_dir, rec_dir
from cprec_core.prompts import item_text
from cprec_core.rec.baselines import popularity_score_fn
from cprec_core.rec.build import build_recommender
from cprec_core.rec.data import DomainData, load_domain
from cprec_core.rec.item_encoder import item_embeddings, standardize
from cprec_core.rec.ranking import ScoreFn, model_score_fn, rank_users_both
from cprec_core.rec.train import Loss, train_model, trainable_state
from cprec_core.rec.zero_shot import zero_shot_score_fn
from cprec_core.schema import REC_RANKS, SILVER_EVENTS, SILVER_ITEMS

ZERO_SHOT = {"zero-shot": "cpt", "zero-shot-base": "base"}  # variant -> which checkpoint's embeddings
SELECT_METRIC = "NDCG@10"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU runs are then bit-for-bit repeatable)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choice_label(choice: dict[str, Any]) -> str:
    """A directory name for a set of finetune overrides, e.g. 'item_pooling=mean,lr=0.001'."""
    return ",".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(choice.items())
    )


def run_dir(cfg: Config, domain: str, variant: str, seed: int, choice: dict[str, Any] | None = None) -> Path:
    label = choice_label(choice or {})
    base = rec_dir(cfg) / domain / variant
    return (base / label if label else base) / f"seed={seed}"


def checkpoint_of(variant: str) -> str | None:
    """Which LLM checkpoint a variant reads: 'cpt', 'base', or None (popularity, sasrec)."""
    if variant in ZERO_SHOT:
        return ZERO_SHOT[variant]
    return variant.split("-")[0] if variant.split("-")[0] in ("cpt", "base") else None


def model_dir_of(variant: str, cpt_dir: Path | None, base_dir: Path | None) -> Path | None:
    """The LLM directory a variant reads (None for popularity and SASRec)."""
    which = checkpoint_of(variant)
    if which is None:
        return None
    path = cpt_dir if which == "cpt" else base_dir
    if path is None:
        raise ValueError(f"variant {variant!r} needs the {which} model directory, got None")
    return Path(path)


def run_key(
    cfg: Config, domain: str, variant: str, seed: int, cpt_dir: Path | None, base_dir: Path | None
) -> str:
    """What a run's result depends on: config, silver data, the LLM it reads, code version
    (not which other variants run, nor the selection grid)."""
    config = {
        "finetune": cfg.finetune.model_dump(mode="json", exclude={"variants", "select"}),
        "max_title_chars": cfg.corpus.max_title_chars,
        "domain": domain,
        "variant": variant,
        "seed": seed,
    }
    inputs = {
        "events": verify(SILVER_EVENTS.path(cfg.root)).fingerprint,
        "items": verify(SILVER_ITEMS.path(cfg.root)).fingerprint,
    }
    llm = llm_fingerprint(variant, cpt_dir, base_dir)
    if llm is not None:
        inputs["llm"] = llm
    return identity(config, inputs)


def llm_fingerprint(variant: str, cpt_dir: Path | None, base_dir: Path | None) -> str | None:
    """model_fingerprint of the LLM a variant reads (None for popularity and SASRec); a missing CPT
    checkpoint is named as such, with the stage that writes it."""
    model_dir = model_dir_of(variant, cpt_dir, base_dir)
    if model_dir is None:
        return None
    try:
        return model_fingerprint(model_dir)
    except ArtifactError:
        if checkpoint_of(variant) != "cpt":
            raise
        raise ArtifactError(
            f"{model_dir}: no CPT checkpoint for variant {variant!r} (missing or incomplete): "
            "run the cpt stage first"
        ) from None


def _ranks_table(data: DomainData, ranks: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in REC_RANKS.schema.names}
    for split, (masked, unmasked) in ranks.items():
        cols["user_id"] += data.user_ids
        cols["split"] += [split] * data.n_users
        cols["target_item_id"] += [data.item_ids[i] for i in data.target(split)]
        cols["rank"] += masked.tolist()
        cols["rank_unmasked"] += unmasked.tolist()
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
    report: Callable[[str], None] | None = None,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Build/train one variant on one domain with one seed; rank valid and test users; save.

    Returns the content of results.json plus "out_dir" (the run directory; its REC_RANKS table
    holds every user's valid and test rank: cprec_core.artifacts.read_table(REC_RANKS, out_dir)).
    `stop_after_epochs` stops a trained variant after that epoch's checkpoint (to test resuming).
    """
    try:
        check_variant(variant)
    except ValueError as e:
        raise ValueError(f"finetune.variants: {e}") from None
    key = run_key(cfg, domain, variant, seed, cpt_dir, base_dir)
    model_dir = model_dir_of(variant, cpt_dir, base_dir)
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
        "max_epochs": fcfg.max_epochs,
        "llm_max_epochs": fcfg.llm_max_epochs,
        "seconds_per_epoch": None,
        "trainable_params": 0,
    }
    model = None
    score_fn: ScoreFn
    if variant in ZERO_SHOT:
        texts = data.texts(lambda t, c: item_text(t, c, cfg.corpus.max_title_chars))
        emb = standardize(
            item_embeddings(model_dir, texts, fcfg, cache_dir(cfg, "item_emb"), device, progress)
        )
        results["item_encoder"] = {"model_dir": str(model_dir), "llm_hidden": emb.shape[1]}
        score_fn = zero_shot_score_fn(emb, fcfg.max_seq_len)
    elif variant == "popularity":
        score_fn = popularity_score_fn(data)
    else:
        model, info = build_recommender(cfg, data, variant, model_dir, device, progress)
        if info:
            results["item_encoder"] = info
        results["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        loss: Loss = "full_softmax" if variant == "sasrec" or fcfg.loss == "softmax" else "infonce"
        work = rec_dir(cfg) / ".work" / domain / variant / f"seed={seed}-{key}"
        results.update(
            train_model(model, data, fcfg, loss, seed, device, work, progress, report, stop_after_epochs)
        )
        score_fn = model_score_fn(model, fcfg.max_seq_len, device)
    ranks = {split: rank_users_both(score_fn, data, split) for split in ("valid", "test")}
    results["seconds"] = round(time.perf_counter() - started, 3)
    for split, (masked, unmasked) in ranks.items():
        results[split] = mean_metrics(masked, cfg.evaluate.ks)
        results[f"{split}_unmasked"] = mean_metrics(unmasked, cfg.evaluate.ks)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_table(REC_RANKS, tmp, _ranks_table(data, ranks))
        if model is not None:
            save_file(
                {k: v.contiguous() for k, v in trainable_state(model).items()}, tmp / "model.safetensors"
            )
            llm = getattr(model.items, "llm", None)
            if llm is not None and llm.mode == "lora":
                llm.save_adapters(tmp / "lora")
        (tmp / "results.json").write_text(json.dumps(results, indent=2))
        finish_manifest(tmp, "rec.run", 2 * data.n_users, None, key, {"variant": variant, "seed": seed})
    if model is not None:
        shutil.rmtree(rec_dir(cfg) / ".work" / domain / variant / f"seed={seed}-{key}", ignore_errors=True)
    return {**results, "out_dir": str(out_dir)}


def load_run(out_dir: Path) -> dict[str, Any]:
    """results.json of a finished run (manifest verified)."""
    verify(out_dir)
    return {**json.loads((Path(out_dir) / "results.json").read_text()), "out_dir": str(out_dir)}


def select_on_valid(candidates: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """The choice whose run scored the best valid NDCG@10 (the first on ties); reads `valid` only."""
    best = max(range(len(candidates)), key=lambda i: (candidates[i][1]["valid"][SELECT_METRIC], -i))
    return candidates[best][0]


@holds_run_lock
def finetune_run(
    cfg: Config,
    cpt_dir: Path | None,
    base_dir: Path | None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every (downstream domain, variant, seed) of the config; unchanged runs are reused.

    With a finetune.select grid, each (domain, variant) first trains every applicable choice with
    the first seed and keeps the best on valid; the other seeds then run with that choice.
    Writes models/rec/<run>/ (run directories, selection.json files, runs.json, and a top
    `_manifest.json` written last). Returns {"rec_dir", "runs": [results of the kept runs],
    "selection": {domain: {variant: record}}, "reused": n, "trained": n}.
    """
    for variant in cfg.finetune.variants:  # a missing checkpoint fails now, not after other variants
        llm_fingerprint(variant, cpt_dir, base_dir)
    top = rec_dir(cfg)
    top.mkdir(parents=True, exist_ok=True)
    (top / "_manifest.json").unlink(missing_ok=True)  # the directory is incomplete until the end
    counts = {"reused": 0, "trained": 0}

    def run(domain: str, variant: str, seed: int, choice: dict[str, Any]) -> dict[str, Any]:
        run_cfg = cfg.with_choice(variant, choice)
        out = run_dir(cfg, domain, variant, seed, choice)
        key = run_key(run_cfg, domain, variant, seed, cpt_dir, base_dir)
        try:
            hit = verify(out).config_hash == key
        except ArtifactError:
            hit = False
        counts["reused" if hit else "trained"] += 1
        if hit:
            result = load_run(out)
        else:
            if report is not None:
                report(f"finetune {domain}/{variant} seed {seed} {choice_label(choice)}".rstrip())
            result = finetune_variant(
                run_cfg, domain, variant, seed, cpt_dir, base_dir, out, progress, report
            )
        return {**result, "choice": choice}

    runs: list[dict[str, Any]] = []
    selection: dict[str, dict[str, Any]] = {}
    for domain in cfg.eval_domains:
        for variant in cfg.finetune.variants:
            seeds = cfg.finetune.seeds_of(variant, cfg.evaluate.seeds)
            choices = choices_for(cfg, variant)
            chosen = choices[0]
            if len(choices) > 1:
                tried = [(c, run(domain, variant, seeds[0], c)) for c in choices]
                chosen = select_on_valid(tried)
                record = {
                    "metric": f"valid {SELECT_METRIC}",
                    "seed": seeds[0],
                    "candidates": [{"choice": c, "valid": r["valid"][SELECT_METRIC]} for c, r in tried],
                    "chosen": chosen,
                }
                atomic_write_text(top / domain / variant / "selection.json", json.dumps(record, indent=2))
                selection.setdefault(domain, {})[variant] = record
            runs += [run(domain, variant, seed, chosen) for seed in seeds]
    listing = [
        {
            "domain": r["domain"],
            "variant": r["variant"],
            "seed": r["seed"],
            "choice": r["choice"],
            "dir": str(Path(r["out_dir"]).relative_to(top)),
        }
        for r in runs
    ]
    atomic_write_text(top / "runs.json", json.dumps({"runs": listing, "selection": selection}, indent=2))
    extra = {"runs": [r["dir"] for r in listing]}
    finish_manifest(top, "rec.runs", len(runs), None, config_hash(listing), extra)
    return {"rec_dir": str(top), "runs": runs, "selection": selection, **counts}


def load_runs(cfg: Config) -> dict[str, Any]:
    """What the finetune stage kept (runs.json), each run's results verified: the evaluate stage's input.

    Raises ArtifactError when the finetune stage has not finished for this config.
    """
    top = rec_dir(cfg)
    verify(top)
    listing = json.loads((top / "runs.json").read_text())
    runs = [load_run(top / r["dir"]) | {"choice": r.get("choice", {})} for r in listing["runs"]]
    ft = cfg.finetune
    want = {
        (d, v, s) for d in cfg.eval_domains for v in ft.variants for s in ft.seeds_of(v, cfg.evaluate.seeds)
    }
    have = {(r["domain"], r["variant"], r["seed"]) for r in runs}
    if want - have:
        missing = sorted(want - have)[0]
        raise ArtifactError(
            f"{top}: no finetune run for {'/'.join(map(str, missing))}: run the finetune stage first"
        )
    return {
        "runs": [r for r in runs if (r["domain"], r["variant"], r["seed"]) in want],
        "selection": listing["selection"],
    }
