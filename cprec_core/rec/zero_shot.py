"""Zero-shot variant: the CPT model with no target-domain training (PAPER.md §5).

Reads the frozen item embeddings of the CPT checkpoint (cprec_core.rec.item_encoder, the same
function and cache as the fine-tuned variants); writes nothing. Definition: the user vector is
the mean of the L2-normalised LLM embeddings of the user's last `finetune.max_seq_len` history
items; every item is scored by cosine similarity with it. Nothing is learned: this measures how
much next-item signal the CPT representation carries on its own.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cprec_core.rec.ranking import ScoreFn


def zero_shot_score_fn(llm_emb: torch.Tensor, max_seq_len: int) -> ScoreFn:
    """Cosine of the mean normalised history embedding against every item's embedding."""
    items = F.normalize(llm_emb.double(), dim=-1).numpy()

    def score(hist: list[np.ndarray]) -> np.ndarray:
        users = np.stack([items[h[-max_seq_len:]].mean(axis=0) for h in hist])
        users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
        return users @ items.T

    return score
