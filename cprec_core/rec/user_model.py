"""User model: a small causal transformer over a user's item embeddings that predicts the next
item's embedding (PAPER.md §5; HLLM's user LLM at CPU scale; SASRec when the items are ids).

Reads and writes nothing. One module serves every trained variant: the item encoder is a
`TextItemEncoder` (LLM embeddings + adapter: variants cpt / base) or an `IdItemEncoder`
(SASRec). The same `items.table()` gives positives, negatives and the full-ranking catalogue,
so training and evaluation cannot drift apart.

Scores: `cosine` = normalised user vector . normalised item vector / temperature (HLLM);
`dot` = plain inner product (SASRec).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cprec_core.config import FinetuneConfig


class SequenceRecommender(nn.Module):
    """items: module with forward(idx) and table(); sequences are left-padded with n_items."""

    def __init__(
        self,
        items: nn.Module,
        n_items: int,
        cfg: FinetuneConfig,
        score: Literal["cosine", "dot"],
    ) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_heads:
            raise ValueError(
                f"finetune.hidden_size={cfg.hidden_size} must be divisible by "
                f"finetune.num_heads={cfg.num_heads}"
            )
        self.items = items
        self.n_items = n_items
        self.num_heads = cfg.num_heads
        self.temperature = cfg.temperature if score == "cosine" else 1.0
        self.cosine = score == "cosine"
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        nn.init.normal_(self.pos.weight, std=0.02)  # as the id embeddings: neither drowns the other
        self.input_norm = nn.LayerNorm(cfg.hidden_size)  # SASRec's LayerNorm(item + position)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden_size,
            cfg.num_heads,
            4 * cfg.hidden_size,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden_size)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] item indices (n_items = padding) -> [B, L, H] predicted next-item vectors."""
        length = seq.shape[1]
        pad = seq == self.n_items
        x = self.items(seq.clamp(max=self.n_items - 1)) * (~pad).unsqueeze(-1)
        x = self.drop(self.input_norm(x + self.pos.weight[-length:]))  # right-aligned positions
        # Position i may attend to real items j <= i, and always to itself (no all-masked rows).
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        allowed = causal & ~pad.unsqueeze(1) | torch.eye(length, dtype=torch.bool, device=seq.device)
        blocked = (~allowed).repeat_interleave(self.num_heads, dim=0)
        return self.norm(self.encoder(x, mask=blocked))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[U, H] x [I, H] -> [U, I] logits."""
        if self.cosine:
            users, items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
        return users @ items.T / self.temperature


def infonce_loss(
    model: SequenceRecommender,
    preds: torch.Tensor,
    targets: torch.Tensor,
    num_negatives: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """InfoNCE of predicted vectors [P, H] against their target items [P].

    Candidates = the distinct targets of the batch (in-batch negatives) + `num_negatives` items
    drawn uniformly. A candidate that is the same item as a row's positive, other than the
    positive's own column, is masked out: the positive is never its own negative.
    """
    in_batch, label = torch.unique(targets, return_inverse=True)
    sampled = torch.randint(0, model.n_items, (num_negatives,), generator=generator).to(targets.device)
    cand = torch.cat([in_batch, sampled])
    logits = model.score(preds, model.items(cand))
    same = cand.unsqueeze(0) == targets.unsqueeze(1)
    same[torch.arange(len(targets)), label] = False
    return F.cross_entropy(logits.masked_fill(same, float("-inf")), label)


def full_softmax_loss(model: SequenceRecommender, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over all items of the domain (SASRec as RecBole trains it)."""
    return F.cross_entropy(model.score(preds, model.items.table()), targets)
