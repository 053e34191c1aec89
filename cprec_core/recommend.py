"""The recommend stage: top-K items per user from a fine-tuned variant, the output a platform
deploys (DESIGN.md "recommend").

Reads the finetune stage's runs (models/rec/<run>/runs.json, each run's results.json and
model.safetensors), silver.events and silver.items, and the LLM checkpoints. Writes
`<root>/serving/<run>/recommendations/` (GOLD_RECOMMENDATIONS, partitioned by domain, one row per
(domain, user, rank): item, score, variant, model fingerprint) atomically, with a manifest whose
`extra` names, per domain, the variant and run chosen and why.

Which model: recommend.variant, or `best` = the variant with the highest mean valid NDCG@10 over
its seeds, then that variant's seed with the best valid NDCG@10 (never a test metric). A user's
whole known history (train, valid and test events) is what the model reads, and every item in it is
excluded from the recommendations. New sessions (`recommend_sessions`) are scored the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file

from cprec_core.artifacts import config_hash, model_fingerprint, write_table
from cprec_core.config import Config
from cprec_core.errors import UserError
from cprec_core.locks import holds_run_lock
from cprec_core.paths import cache_dir, serving_dir
from cprec_core.prompts import item_text
from cprec_core.rec.baselines import popularity_score_fn
from cprec_core.rec.build import build_recommender
from cprec_core.rec.data import DomainData, history_mask, load_domain
from cprec_core.rec.finetune import ZERO_SHOT, load_runs, model_dir_of, pick_device
from cprec_core.rec.item_encoder import item_embeddings, standardize
from cprec_core.rec.ranking import SCORE_CELLS, ScoreFn, model_score_fn
from cprec_core.rec.train import load_trainable
from cprec_core.rec.zero_shot import zero_shot_score_fn
from cprec_core.schema import GOLD_RECOMMENDATIONS

SELECT_METRIC = "NDCG@10"


class RecommendError(UserError, ValueError):
    """No model to recommend with, or an unknown user / item; the message says which and why."""


def choose_run(runs: list[dict[str, Any]], domain: str, variant: str) -> dict[str, Any]:
    """The run to serve `domain` with: of `variant`, or of the best variant on valid when 'best'."""
    mine = [r for r in runs if r["domain"] == domain]
    if variant != "best":
        mine = [r for r in mine if r["variant"] == variant]
        if not mine:
            raise RecommendError(f"recommend.variant={variant!r}: no finetune run of it for domain {domain}")
    if not mine:
        raise RecommendError(f"domain {domain}: no finetune run to recommend with")
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in mine:
        by_variant.setdefault(r["variant"], []).append(r)
    best = max(by_variant, key=lambda v: np.mean([r["valid"][SELECT_METRIC] for r in by_variant[v]]))
    return max(by_variant[best], key=lambda r: r["valid"][SELECT_METRIC])


def scorer(cfg: Config, run: dict[str, Any], data: DomainData, cpt_dir: Path, base_dir: Path) -> ScoreFn:
    """The scoring function of a finished run, rebuilt from its files (the same one finetune ranked with)."""
    variant = run["variant"]
    device = pick_device()
    if variant == "popularity":
        return popularity_score_fn(data)
    model_dir = model_dir_of(variant, cpt_dir, base_dir)
    run_cfg = cfg.with_choice(variant, run.get("choice") or {})
    if variant in ZERO_SHOT:
        texts = data.texts(lambda t, c: item_text(t, c, cfg.corpus.max_title_chars))
        cache = cache_dir(cfg, "item_emb")
        emb = standardize(item_embeddings(model_dir, texts, run_cfg.finetune, cache, device))
        return zero_shot_score_fn(emb, run_cfg.finetune.max_seq_len)
    model, _ = build_recommender(run_cfg, data, variant, model_dir, device)
    load_trainable(model, load_file(Path(run["out_dir"]) / "model.safetensors"))
    model.to(device)
    return model_score_fn(model, run_cfg.finetune.max_seq_len, device)


def top_k(
    score_fn: ScoreFn, histories: list[np.ndarray], n_items: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(items [U, k], scores [U, k]) of the highest-scored items outside each history, best first;
    equal scores go to the lower item index. A user who has seen nearly everything gets fewer
    than k real items: the rest are -1 with score -inf."""
    step = max(1, SCORE_CELLS // max(1, n_items))
    items = np.empty((len(histories), k), dtype=np.int64)
    scores = np.empty((len(histories), k))
    for lo in range(0, len(histories), step):
        hist = histories[lo : lo + step]
        s = np.asarray(score_fn(hist), dtype=np.float64).copy()
        s[history_mask(hist, n_items)] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(s, order, axis=1)
        items[lo : lo + step] = np.where(np.isfinite(top), order, -1)
        scores[lo : lo + step] = top
    return items, scores


def full_histories(data: DomainData) -> list[np.ndarray]:
    """Every known event of each user, in order: train, then valid, then test."""
    return [
        np.append(s, [v, t]) for s, v, t in zip(data.train, data.valid_target, data.test_target, strict=True)
    ]


@holds_run_lock
def build_recommendations(cfg: Config, cpt_dir: Path, base_dir: Path) -> dict[str, Any]:
    """Top recommend.top_k items for every user of every evaluated domain; returns what was served."""
    rc = cfg.recommend
    runs = load_runs(cfg)["runs"]
    cols: dict[str, list] = {name: [] for name in GOLD_RECOMMENDATIONS.schema.names}
    served: dict[str, Any] = {}
    for domain in cfg.eval_domains:
        run = choose_run(runs, domain, rc.variant)
        data = load_domain(cfg.root, domain)
        items, scores = top_k(
            scorer(cfg, run, data, cpt_dir, base_dir), full_histories(data), data.n_items, rc.top_k
        )
        # a run dir is cprec-written, so this is its manifest fingerprint: its weights and LoRA
        # adapters and its ranks, which also follow the LLM it reads; a retrained run gets a new one
        fingerprint = model_fingerprint(Path(run["out_dir"]))
        for u, (row_items, row_scores) in enumerate(zip(items, scores, strict=True)):
            for rank, (i, s) in enumerate(zip(row_items.tolist(), row_scores.tolist(), strict=True), start=1):
                if i < 0:
                    break
                cols["domain"].append(domain)
                cols["user_id"].append(data.user_ids[u])
                cols["rank"].append(rank)
                cols["item_id"].append(data.item_ids[i])
                cols["score"].append(s)
                cols["variant"].append(run["variant"])
                cols["model_fingerprint"].append(fingerprint)
        served[domain] = {
            "variant": run["variant"],
            "seed": run["seed"],
            "run_dir": run["out_dir"],
            "valid_NDCG@10": run["valid"][SELECT_METRIC],
            "users": data.n_users,
            "model_fingerprint": fingerprint,
        }
    table = pa.table(cols, schema=GOLD_RECOMMENDATIONS.schema)
    manifest = write_table(
        GOLD_RECOMMENDATIONS,
        serving_dir(cfg),
        table,
        config_hash(cfg.recommend, cfg.finetune),
        {"served": served, "top_k": rc.top_k},
    )
    return {"dir": str(GOLD_RECOMMENDATIONS.path(serving_dir(cfg))), "rows": manifest.rows, "served": served}


def recommend_sessions(
    cfg: Config, domain: str, sessions: list[list[str]], cpt_dir: Path, base_dir: Path, k: int | None = None
) -> list[list[tuple[str, float]]]:
    """Top-k (item_id, score) for each session, a list of item ids of `domain` in time order (a
    known user's history or a new visitor's clicks), with the model build_recommendations serves."""
    data = load_domain(cfg.root, domain)
    index = {iid: i for i, iid in enumerate(data.item_ids)}
    histories = []
    for n, session in enumerate(sessions):
        unknown = [i for i in session if i not in index]
        if unknown or not session:
            why = f"item {unknown[0]!r} is not in {domain}'s catalogue" if unknown else "no items"
            raise RecommendError(f"session {n}: {why}")
        histories.append(np.array([index[i] for i in session], dtype=np.int64))
    run = choose_run(load_runs(cfg)["runs"], domain, cfg.recommend.variant)
    with torch.no_grad():
        items, scores = top_k(
            scorer(cfg, run, data, cpt_dir, base_dir), histories, data.n_items, k or cfg.recommend.top_k
        )
    return [
        [(data.item_ids[i], s) for i, s in zip(row_i.tolist(), row_s.tolist(), strict=True) if i >= 0]
        for row_i, row_s in zip(items, scores, strict=True)
    ]


def read_sessions(path: Path) -> list[list[str]]:
    """A JSON-lines file of sessions, each {"items": [item ids in time order]}; blank lines skipped."""
    sessions = []
    for n, text in enumerate(Path(path).read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecommendError(f"{path} line {n}: not JSON: {e.msg}") from None
        if not isinstance(value, dict) or not isinstance(value.get("items"), list):
            raise RecommendError(f'{path} line {n}: expected {{"items": [item ids in time order]}}')
        sessions.append([str(i) for i in value["items"]])
    return sessions
