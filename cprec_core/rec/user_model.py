"""User models: a causal sequence model over a user's item embeddings that predicts the next
item's embedding (PAPER.md §5).

- `SequenceRecommender` (finetune.user_model=light): a small causal transformer of width
  finetune.hidden_size; with id items it is SASRec.
- `LLMUserRecommender` (finetune.user_model=llm): HLLM's user LLM: the checkpoint's own decoder
  blocks read the item embeddings in place of token embeddings; every block trains.

Reads and writes nothing. The item encoder is a `TextItemEncoder` (LLM text, frozen or trained:
variants cpt / base) or an `IdItemEncoder` (SASRec). The same `items` module gives positives,
negatives and the full-ranking catalogue, so training and evaluation cannot drift apart.

Scores: `cosine` = normalised user vector . normalised item vector / temperature (HLLM);
`dot` = plain inner product (SASRec).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cprec_core.config import FinetuneConfig


class Recommender(nn.Module):
    """items: module with prepare(idx), forward(idx) and table(); sequences are left-padded with
    n_items. Subclasses map [B, L] item indices to [B, L, H] predicted next-item vectors."""

    def __init__(self, items: nn.Module, n_items: int, temperature: float, score: Literal["cosine", "dot"]):
        super().__init__()
        self.items = items
        self.n_items = n_items
        self.temperature = temperature if score == "cosine" else 1.0
        self.cosine = score == "cosine"

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[U, H] x [I, H] -> [U, I] logits."""
        if self.cosine:
            users, items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
        return users @ items.T / self.temperature

    def llm_parameters(self) -> list[nn.Parameter]:
        """Trainable weights that came from the LLM checkpoint (they train at finetune.llm_lr)."""
        llm = getattr(self.items, "llm", None)
        return [] if llm is None else llm.llm_parameters()


class SequenceRecommender(Recommender):
    """The light user model: item + position embedding, a causal transformer, a final norm."""

    def __init__(
        self,
        items: nn.Module,
        n_items: int,
        cfg: FinetuneConfig,
        score: Literal["cosine", "dot"],
    ) -> None:
        super().__init__(items, n_items, cfg.temperature, score)
        self.num_heads = cfg.num_heads
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


class LLMUserRecommender(Recommender):
    """HLLM's user LLM: an HF decoder (the checkpoint's blocks) reads item embeddings as its input
    embeddings; its final states are the predicted next-item vectors (width = the LLM's).

    Histories arrive left-padded; each row is rotated so that its items start at position 0 (the
    padding moves to the end, where the causal mask keeps every real position away from it), and
    the output is rotated back.
    """

    def __init__(self, items: nn.Module, n_items: int, decoder: nn.Module, cfg: FinetuneConfig) -> None:
        super().__init__(items, n_items, cfg.temperature, "cosine")
        self.decoder = decoder

    def llm_parameters(self) -> list[nn.Parameter]:
        return [*super().llm_parameters(), *self.decoder.parameters()]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] item indices (n_items = padding) -> [B, L, D] predicted next-item vectors."""
        length = seq.shape[1]
        pad = seq == self.n_items
        x = self.items(seq.clamp(max=self.n_items - 1)) * (~pad).unsqueeze(-1)
        shift = pad.sum(1, keepdim=True)
        steps = torch.arange(length, device=seq.device).unsqueeze(0)
        forward = (steps + shift) % length  # rotated[j] = original[(j + shift) % L]
        rotated = x.gather(1, forward.unsqueeze(-1).expand_as(x))
        mask = (~pad).gather(1, forward).long()
        out = self.decoder(inputs_embeds=rotated, attention_mask=mask, use_cache=False).last_hidden_state
        back = ((steps - shift) % length).unsqueeze(-1).expand_as(out)
        return out.float().gather(1, back)


def draw_negatives(n_items: int, num_negatives: int, generator: torch.Generator) -> torch.Tensor:
    """`num_negatives` item indices drawn uniformly (with replacement) for InfoNCE."""
    return torch.randint(0, n_items, (num_negatives,), generator=generator)


def infonce_loss(
    model: Recommender, preds: torch.Tensor, targets: torch.Tensor, sampled: torch.Tensor
) -> torch.Tensor:
    """InfoNCE of predicted vectors [P, H] against their target items [P].

    Candidates = the distinct targets of the batch (in-batch negatives) + the `sampled` items
    (draw_negatives). A candidate that is the same item as a row's positive, other than the
    positive's own column, is masked out: the positive is never its own negative.
    """
    in_batch, label = torch.unique(targets, return_inverse=True)
    sampled = sampled.to(targets.device)
    cand = torch.cat([in_batch, sampled])
    logits = model.score(preds, model.items(cand))
    same = cand.unsqueeze(0) == targets.unsqueeze(1)
    same[torch.arange(len(targets)), label] = False
    return F.cross_entropy(logits.masked_fill(same, float("-inf")), label)


def full_softmax_loss(model: Recommender, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over all items of the domain (SASRec as RecBole trains it)."""
    return F.cross_entropy(model.score(preds, model.items.table()), targets)
