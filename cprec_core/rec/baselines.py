"""Non-LLM baselines (PAPER.md §5 comparison; DESIGN.md step 6): popularity and SASRec.

Reads a `DomainData`; writes nothing. Popularity ranks every item by its number of train
events in the domain (the same list for every user, history excluded at ranking time).
SASRec (Kang & McAuley, ICDM 2018, "Self-Attentive Sequential Recommendation") is the shared
causal-transformer user model over learned item-id embeddings, trained on whole sequences with
every position a target and a softmax over all items (as RecBole trains it).
"""

from __future__ import annotations

import numpy as np

from cprec_core.config import FinetuneConfig
from cprec_core.rec.data import DomainData
from cprec_core.rec.item_encoder import IdItemEncoder
from cprec_core.rec.ranking import ScoreFn
from cprec_core.rec.user_model import SequenceRecommender


def popularity_counts(data: DomainData) -> np.ndarray:
    """Train-split event count of every item (float64 [n_items])."""
    counts = np.zeros(data.n_items, dtype=np.float64)
    for seq in data.train:
        np.add.at(counts, seq, 1.0)
    return counts


def popularity_score_fn(data: DomainData) -> ScoreFn:
    """Every user gets the train-popularity scores (ties ranked pessimistically by the metrics)."""
    counts = popularity_counts(data)
    return lambda hist: np.broadcast_to(counts, (len(hist), data.n_items))


def build_sasrec(n_items: int, cfg: FinetuneConfig) -> SequenceRecommender:
    """SASRec: id embeddings of width finetune.hidden_size, dot-product scores."""
    return SequenceRecommender(IdItemEncoder(n_items, cfg.hidden_size), n_items, cfg, score="dot")
