"""Item encoder: an LLM reads each item's text; its final hidden states give the item embedding
(PAPER.md §5, after HLLM's item LLM).

Reads a causal-LM directory (HF `save_pretrained`, safetensors + tokenizer: the CPT checkpoint or
the base model) and the item texts of one domain. Writes an embedding cache
`<root>/cache/item_emb/<key>.safetensors`, keyed by the checkpoint's fingerprint (hash of its
*.safetensors and config.json), the pooling settings and the exact item texts, so the same
(checkpoint, domain) is encoded once.

Text fed to the LLM: "Item: {item_text}" + EOS, where item_text is the corpus stage's rendering
(cprec_core.prompts.item_text: "title (category)"), so an item reads exactly as it did in CPT.
Pooling (finetune.item_pooling): `layers` (default) = the token-mean of every layer's states
(embedding output, each block, the last after the final norm), averaged over layers; `mean` =
the token-mean of the last layer only; `last` = the state at the final token (the EOS marker).
Why `layers` is worth offering: a frozen decoder's last layer is shaped to predict the next token,
so after CPT it keeps what predicts behaviour (an item's taste) and drops what tells two items
apart; the lower layers keep the item's own words. Which pooling serves a domain best is picked
on valid with finetune.select, never on test.

This module is the `frozen` encoder mode: embeddings computed once with no_grad, a trainable
adapter maps them to the user model's width. The modes that train the LLM itself (`full`,
`lora`, `top`) are cprec_core.rec.item_llm; both feed `TextItemEncoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load, save
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cprec_core.artifacts import atomic_write_bytes, config_hash, identity, model_fingerprint
from cprec_core.config import FinetuneConfig
from cprec_core.errors import UserError
from cprec_core.progress import progress_counter

ITEM_PREFIX = "Item: "


class ItemEncoderError(UserError, ValueError):
    """A model directory cannot serve as item encoder; the message names the path."""


def _token_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _pool(states: tuple[torch.Tensor, ...], mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Every layer's [B, T, D] states (embeddings first, post-final-norm last) and the [B, T] 0/1
    mask of real tokens (right-padded) -> [B, D]."""
    if pooling == "layers":
        return torch.stack([_token_mean(h, mask) for h in states]).mean(0)
    hidden = states[-1]
    if pooling == "mean":
        return _token_mean(hidden, mask)
    last = mask.sum(1).long() - 1
    return hidden[torch.arange(hidden.shape[0]), last]


def load_item_lm(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM, tokenizer) of a checkpoint directory, fp32, with a one-line error naming it."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, use_safetensors=True, dtype=torch.float32
        )
    except (OSError, ValueError) as e:
        raise ItemEncoderError(f"{model_dir}: cannot load tokenizer/causal LM: {e}") from None
    return lm, tokenizer


def item_token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of "Item: {text}", cut to `max_tokens` including the closing EOS."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [
        tokenizer(ITEM_PREFIX + t, add_special_tokens=True)["input_ids"][: max_tokens - len(eos)] + eos
        for t in texts
    ]


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length and cut into batches: similar lengths share a batch (little padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def encode_texts(
    model_dir: Path,
    texts: list[str],
    cfg: FinetuneConfig,
    device: torch.device,
    progress: bool = False,
) -> torch.Tensor:
    """Frozen LLM embeddings [len(texts), llm_hidden] (float32, on CPU) of "Item: {text}" + EOS."""
    lm, tokenizer = load_item_lm(Path(model_dir))
    body = lm.base_model.to(device).eval()  # the decoder without the LM head: no vocab-size logits
    ids = item_token_ids(tokenizer, texts, cfg.item_max_tokens)
    out = torch.empty(len(ids), lm.config.hidden_size)
    with progress_counter(f"encode {len(texts):,} items", len(ids), "items", progress) as advance:
        for batch in length_batches([len(i) for i in ids], cfg.embed_batch_size):
            width = max(len(ids[i]) for i in batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                x[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            states = body(
                input_ids=x.to(device), attention_mask=mask.to(device), output_hidden_states=True
            ).hidden_states
            out[batch] = _pool(tuple(h.float() for h in states), mask.to(device), cfg.item_pooling).cpu()
            advance(len(batch))
    return out


def item_cache_path(
    cache_dir: Path, model_dir: Path, texts: list[str], cfg: FinetuneConfig, what: str
) -> Path:
    """The cache file of one encoding (`what`: the pooling, or the top-k split) of these item texts by
    this checkpoint: its `identity` of the checkpoint's fingerprint, the exact texts, the prompt
    prefix and the token limit. Without the code version (code=False, as before): every code edit
    already reruns fine-tuning (its stage key holds it), and this cache is what spares those reruns
    the LLM pass; what decides the vectors is named here instead."""
    config = {"encoding": what, "item_max_tokens": cfg.item_max_tokens, "prefix": ITEM_PREFIX}
    inputs = {"model": model_fingerprint(model_dir), "texts": config_hash(texts)}
    return Path(cache_dir) / f"{identity(config, inputs, code=False)}.safetensors"


def item_embeddings(
    model_dir: Path,
    texts: list[str],
    cfg: FinetuneConfig,
    cache_dir: Path,
    device: torch.device,
    progress: bool = False,
) -> torch.Tensor:
    """Cached `encode_texts`: one file per `item_cache_path` (checkpoint, texts, pooling, token limit)."""
    path = item_cache_path(cache_dir, model_dir, texts, cfg, cfg.item_pooling)
    if path.is_file():
        return load(path.read_bytes())["emb"]
    emb = encode_texts(model_dir, texts, cfg, device, progress)
    atomic_write_bytes(path, save({"emb": emb.contiguous()}))
    return emb


def standardize(emb: torch.Tensor) -> torch.Tensor:
    """Per-dimension z-scores over the domain's catalogue: (emb - mean) / std, rows = items.

    A language model puts one large common direction into every item's state (after CPT on the
    demo, mean pooled item states of the unseen domain have mean pairwise cosine 0.99): the
    differences between items, which are what ranking needs, then sit in a tiny residual that the
    adapter's per-item LayerNorm does not recover. Subtracting the catalogue mean and dividing by
    each dimension's std (1e-6 floor) restores them. Applied to every LLM variant alike.
    """
    emb = emb.float()
    return (emb - emb.mean(0)) / emb.std(0).clamp(min=1e-6)


class TextItemEncoder(nn.Module):
    """Item text embeddings -> a trainable adapter to `hidden` dims (+ optionally a learned id vector).

    `source` is either the frozen LLM table [n_items, d_llm] (a non-persistent buffer: cached apart
    by `item_embeddings`, never saved with the model) or an `ItemLLM` that trains with the
    recommender (cprec_core.rec.item_llm). For an ItemLLM, `prepare(idx)` encodes the items a
    training step touches, once; `forward` and `table` then read those vectors (items not prepared
    are encoded on demand; switching train/eval mode drops them, as the weights have moved on).

    adapter = LayerNorm(d_llm) -> Linear(d_llm, hidden) -> GELU -> Linear(hidden, hidden); the
    LayerNorm tames the few huge-magnitude dimensions of LLM hidden states. With `id_embedding`,
    a per-item vector (zero at the start: the model starts as the text-only one) is added to the
    adapter's output, so the recommender can learn item identity where the data is dense.
    """

    def __init__(self, source: torch.Tensor | nn.Module, hidden: int, id_embedding: bool = False) -> None:
        super().__init__()
        if isinstance(source, torch.Tensor):
            self.register_buffer("llm_emb", source.float(), persistent=False)
            self.llm: nn.Module | None = None
            n_items, d = source.shape
        else:
            self.llm = source
            n_items, d = len(source.lengths), source.hidden_size
        self.n_items = n_items
        self.adapter = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.ids: nn.Embedding | None = None
        if id_embedding:
            self.ids = nn.Embedding(n_items, hidden)
            nn.init.zeros_(self.ids.weight)
        self._pos: torch.Tensor | None = None
        self._vectors: torch.Tensor | None = None
        self._still: torch.Tensor | None = None  # the ItemLLM's catalogue while `hold_llm` is set

    def train(self, mode: bool = True) -> TextItemEncoder:
        self._pos = self._vectors = None
        return super().train(mode)

    def hold_llm(self, hold: bool) -> None:
        """While held, the ItemLLM is read, not trained: its whole catalogue is encoded once with no
        gradient and reused by every step (the cost of the frozen mode). Releasing it trains it again."""
        if self.llm is None:
            return
        self._still = None
        if hold:
            was = self.llm.training
            self.llm.eval()
            with torch.no_grad():
                self._still = self.llm.encode(
                    torch.arange(self.n_items, device=self.adapter[1].weight.device)
                )
            self.llm.train(was)
        self._pos = self._vectors = None

    def prepare(self, idx: torch.Tensor) -> None:
        """Encode the distinct items of `idx` with the trainable LLM (a no-op for a frozen table)."""
        if self.llm is None:
            return
        if self._still is not None:
            self._pos, self._vectors = torch.arange(self.n_items, device=self._still.device), self._still
            return
        unique = torch.unique(idx)
        self._pos = torch.full((self.n_items,), -1, dtype=torch.long, device=unique.device)
        self._pos[unique] = torch.arange(len(unique), device=unique.device)
        self._vectors = self.llm.encode(unique)

    def _text(self, idx: torch.Tensor) -> torch.Tensor:
        if self.llm is None:
            return self.llm_emb[idx]
        if self._pos is None or bool((self._pos[idx] < 0).any()):
            self.prepare(idx)
        return self._vectors[self._pos[idx]]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.adapter(self._text(idx))
        return out if self.ids is None else out + self.ids(idx)

    def table(self) -> torch.Tensor:
        """Embeddings of every item [n_items, hidden]: the same function as `forward`."""
        if self.llm is None and self.ids is None:
            return self.adapter(self.llm_emb)
        return self(torch.arange(self.n_items, device=self.adapter[1].weight.device))


class IdItemEncoder(nn.Module):
    """One learned vector per item id (SASRec's item embedding table)."""

    def __init__(self, n_items: int, hidden: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_items, hidden)
        nn.init.normal_(self.emb.weight, std=0.02)

    def prepare(self, idx: torch.Tensor) -> None:
        """Nothing to encode: ids are looked up."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.emb(idx)

    def table(self) -> torch.Tensor:
        return self.emb.weight
