"""Full-ranking evaluation of any recommender on one domain's valid or test targets (PAPER.md §6).

Reads a `DomainData` and a scoring function; writes nothing. Every variant (trained, zero-shot,
popularity) is ranked by this one function: all items of the domain are scored; under the
`masked` protocol (ours) the user's history (train, + valid at test time) is excluded from the
ranking, under the `unmasked` protocol (RecBole's default) it is not. The target is never
excluded (cprec_core.metrics).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from cprec_core.metrics import full_ranks
from cprec_core.rec.data import DomainData, history_mask, left_pad
from cprec_core.rec.user_model import Recommender

SCORE_CELLS = 1 << 22  # users x items scored at once: bounds memory on large catalogues

ScoreFn = Callable[[list[np.ndarray]], np.ndarray]  # histories of a user batch -> scores [B, n_items]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU; nothing on a CPU (fp32 there is exact and not slower)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _ranked(score_fn: ScoreFn, data: DomainData, split: str, unmasked: bool) -> Iterator[tuple[slice, tuple]]:
    histories = data.history(split)
    targets = data.target(split)
    step = max(1, SCORE_CELLS // max(1, data.n_items))
    for lo in range(0, data.n_users, step):
        rows = slice(lo, lo + step)
        hist = histories[rows]
        scores = score_fn(hist)
        masked = full_ranks(scores, targets[rows], history_mask(hist, data.n_items))
        yield rows, (masked, full_ranks(scores, targets[rows]) if unmasked else None)


def rank_users(score_fn: ScoreFn, data: DomainData, split: str) -> np.ndarray:
    """0-based pessimistic rank of each user's `split` target, history masked (int64 [n_users])."""
    ranks = np.empty(data.n_users, dtype=np.int64)
    for rows, (masked, _) in _ranked(score_fn, data, split, unmasked=False):
        ranks[rows] = masked
    return ranks


def rank_users_both(score_fn: ScoreFn, data: DomainData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(masked, unmasked) ranks of each user's `split` target, from one scoring pass."""
    masked_all = np.empty(data.n_users, dtype=np.int64)
    unmasked_all = np.empty(data.n_users, dtype=np.int64)
    for rows, (masked, unmasked) in _ranked(score_fn, data, split, unmasked=True):
        masked_all[rows], unmasked_all[rows] = masked, unmasked
    return masked_all, unmasked_all


def model_score_fn(model: Recommender, max_seq_len: int, device: torch.device) -> ScoreFn:
    """Scores from the user model's last position against every item's vector (eval mode; the
    catalogue is encoded once, here)."""
    model.eval()
    with torch.no_grad(), autocast(device):
        table = model.items.table()

    def score(hist: list[np.ndarray]) -> np.ndarray:
        seq = torch.from_numpy(left_pad(hist, max_seq_len, model.n_items)).to(device)
        with torch.no_grad(), autocast(device):
            return model.score(model(seq)[:, -1], table).double().cpu().numpy()

    return score
