"""Full-ranking evaluation of any recommender on one domain's valid or test targets (PAPER.md §6).

Reads a `DomainData` and a scoring function; writes nothing. Every variant (trained, zero-shot,
popularity) is ranked by this one function: all items of the domain are scored, the user's
history (train, + valid at test time) is excluded, the target never is (cprec_core.metrics).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cprec_core.metrics import full_ranks
from cprec_core.rec.data import DomainData, history_mask, left_pad
from cprec_core.rec.user_model import SequenceRecommender

SCORE_CELLS = 1 << 22  # users x items scored at once: bounds memory on large catalogues

ScoreFn = Callable[[list[np.ndarray]], np.ndarray]  # histories of a user batch -> scores [B, n_items]


def rank_users(score_fn: ScoreFn, data: DomainData, split: str) -> np.ndarray:
    """0-based pessimistic rank of each user's `split` target (int64 [n_users])."""
    histories = data.history(split)
    targets = data.target(split)
    step = max(1, SCORE_CELLS // max(1, data.n_items))
    ranks = np.empty(data.n_users, dtype=np.int64)
    for lo in range(0, data.n_users, step):
        hist = histories[lo : lo + step]
        scores = score_fn(hist)
        ranks[lo : lo + step] = full_ranks(scores, targets[lo : lo + step], history_mask(hist, data.n_items))
    return ranks


def model_score_fn(model: SequenceRecommender, max_seq_len: int, device: torch.device) -> ScoreFn:
    """Scores from the user model's last position against every item's vector (eval mode)."""
    model.eval()
    with torch.no_grad():
        table = model.items.table()

    def score(hist: list[np.ndarray]) -> np.ndarray:
        seq = torch.from_numpy(left_pad(hist, max_seq_len, model.n_items)).to(device)
        with torch.no_grad():
            return model.score(model(seq)[:, -1], table).double().cpu().numpy()

    return score
