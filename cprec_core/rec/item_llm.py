"""The trained item LLM: a checkpoint (CPT or base) reads each item's text and learns, on the target
domain, the item embedding the recommender ranks with (PAPER.md §5; HLLM's item LLM).

Reads a causal-LM directory and one domain's item texts. Writes, in `encoder_mode=top` only, a
cache of lower-layer states `<cache_dir>/<key>.safetensors`, keyed by the checkpoint's fingerprint,
the number of trained blocks, the token limit and the exact item texts.

Encoder modes (finetune.encoder_mode; `frozen` is cprec_core.rec.item_encoder):
- `full`: every weight of the decoder (embeddings, blocks, final norm) trains.
- `lora`: peft LoRA adapters (finetune.lora) on the named projections; the base weights stay frozen.
  `save_adapters` writes them in peft's own format, `load_adapters` reads them back.
- `top`: only the top k = finetune.train_top_layers blocks and the final norm train. The states
  entering block L-k+1 are computed once per (checkpoint, domain) by a frozen pass and cached; the
  bottom blocks are never run again. What it costs: that one pass and the cache (tokens x hidden x
  4 bytes: ~0.35 GB for SmolLM2-135M on Scientific). What it gives up: the bottom blocks and the
  token embeddings never adapt to the domain, and the learnable item token enters at the top
  blocks' input rather than with the words. In exchange a training step runs k blocks instead of
  L: the mode that makes a real LLM trainable on a CPU.

Every item reads "Item: {text}" + EOS, exactly as in the frozen mode. Pooling (finetune.item_pooling)
is the frozen mode's (`layers`, `mean`, `last`) or `item_token`: a learnable vector appended after
the text, whose final state is the item embedding (HLLM). Pooled vectors are standardised with the
catalogue's mean and std measured once at the start, so a trained encoder starts exactly where the
frozen one is. `encode(idx)` serves positives, negatives and the catalogue alike: one function for
training and evaluation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load, save
from torch import nn

from cprec_core.artifacts import atomic_write_bytes
from cprec_core.config import FinetuneConfig
from cprec_core.progress import progress_counter
from cprec_core.rec.item_encoder import (
    _token_mean,
    item_cache_path,
    item_token_ids,
    length_batches,
    load_item_lm,
)


def decoder_layers(decoder: nn.Module) -> nn.ModuleList:
    """The block list of an HF decoder model (LlamaModel and its relatives call it `layers`)."""
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(decoder).__name__}: no `layers` block list; not a Llama-family decoder")
    return layers


def layer_states(decoder: nn.Module, embeds: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Token states of every depth: [input, output of block 1, ..., of block L-1, final normed output].

    The same list HF's `output_hidden_states` gives for a whole decoder, collected with forward hooks
    so that it also holds for a decoder cut to its top blocks. embeds [B, T, D], mask [B, T] 0/1.
    """
    outputs: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _a, out: outputs.append(out[0] if isinstance(out, tuple) else out)
        )
        for layer in decoder_layers(decoder)
    ]
    try:
        last = decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    return [embeds, *outputs[:-1], last]


def top_decoder(decoder: nn.Module, k: int) -> nn.Module:
    """A decoder made of `decoder`'s top k blocks, final norm and rotary embedding (shared modules),
    run on the states entering block L-k+1 as `inputs_embeds`; no token embedding table."""
    config = copy.deepcopy(decoder.config)
    config.num_hidden_layers = k
    with torch.device("meta"):
        top = type(decoder)(config)
    top.embed_tokens = None
    top.layers = nn.ModuleList(list(decoder_layers(decoder))[-k:])
    top.norm = decoder.norm
    top.rotary_emb = decoder.rotary_emb
    return top


def append_item_token(
    embeds: torch.Tensor, mask: torch.Tensor, token: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put `token` [D] right after each row's last real position (rows are right-padded): [B, T+1]."""
    b, t, d = embeds.shape
    at = torch.arange(t + 1, device=embeds.device).unsqueeze(0) == mask.sum(1).unsqueeze(1)
    embeds = torch.where(
        at.unsqueeze(-1), token.to(embeds.dtype), torch.cat([embeds, embeds.new_zeros(b, 1, d)], 1)
    )
    return embeds, torch.cat([mask, mask.new_zeros(b, 1)], 1) | at.long()


def pool_states(
    states: list[torch.Tensor],
    mask: torch.Tensor,
    pooling: str,
    lower_sum: torch.Tensor | None = None,
    n_lower: int = 0,
) -> torch.Tensor:
    """[B, D] item vectors from `layer_states` (the frozen mode's rules, cprec_core.rec.item_encoder).

    `layers` averages the token-mean of every depth; in `top` mode the depths below the trained
    blocks arrive pre-summed (`lower_sum` over `n_lower` depths). `last` and `item_token` take the
    final state at the row's last real position (the EOS, or the appended item token).
    """
    if pooling == "layers":
        total = torch.stack([_token_mean(h, mask) for h in states]).sum(0)
        if lower_sum is not None:
            total = total + lower_sum
        return total / (len(states) + n_lower)
    hidden = states[-1]
    if pooling == "mean":
        return _token_mean(hidden, mask)
    last = mask.sum(1).long() - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _padded(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(i) for i in ids])
    out = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for row, i in enumerate(ids):
        out[row, : len(i)] = torch.tensor(i)
    return out, lengths


class ItemLLM(nn.Module):
    """One domain's items read by a trainable LLM; `encode(idx)` -> standardised [len(idx), D] vectors."""

    def __init__(
        self,
        model_dir: Path,
        texts: list[str],
        cfg: FinetuneConfig,
        cache_dir: Path,
        device: torch.device,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if cfg.encoder_mode == "frozen":
            raise ValueError("ItemLLM trains the LLM; encoder_mode=frozen uses item_encoder.item_embeddings")
        lm, tokenizer = load_item_lm(Path(model_dir))
        decoder = lm.get_decoder()
        n_layers = len(decoder_layers(decoder))
        self.mode = cfg.encoder_mode
        self.pooling = cfg.item_pooling
        self.batch_size = cfg.embed_batch_size
        self.hidden_size = int(lm.config.hidden_size)
        ids, lengths = _padded(item_token_ids(tokenizer, texts, cfg.item_max_tokens))
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("lengths", lengths, persistent=False)
        self.n_lower = 0
        if self.mode == "top":
            k = cfg.train_top_layers
            if k > n_layers:
                raise ValueError(
                    f"finetune.train_top_layers={k} exceeds the {n_layers} layers of {model_dir}"
                )
            states, lower_sum = top_states(
                decoder, ids, lengths, k, cfg, model_dir, texts, cache_dir, progress
            )
            self.register_buffer("states", states, persistent=False)  # [sum(lengths), D], items in order
            self.register_buffer(
                "offsets", torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]), persistent=False
            )
            self.register_buffer("lower_sum", lower_sum, persistent=False)
            self.n_lower = n_layers - k
            decoder.requires_grad_(False)
            self.decoder = top_decoder(decoder, k)
            self.decoder.requires_grad_(True)
        elif self.mode == "lora":
            from peft import LoraConfig, get_peft_model

            lora = cfg.lora
            self.decoder = get_peft_model(
                decoder,
                LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=list(lora.target_modules),
                ),
            )
        else:
            self.decoder = decoder
        del lm
        self.item_token = nn.Parameter(self._item_token_init()) if self.pooling == "item_token" else None
        self.to(device)
        self.register_buffer("mean", torch.zeros(self.hidden_size, device=device), persistent=False)
        self.register_buffer("std", torch.ones(self.hidden_size, device=device), persistent=False)
        was = self.training
        self.eval()
        with torch.no_grad():
            raw = self.encode(torch.arange(len(texts), device=device))
        self.train(was)
        self.mean.copy_(raw.mean(0))
        self.std.copy_(raw.std(0).clamp(min=1e-6))

    def _inner(self) -> nn.Module:
        """The decoder module whose blocks run (inside peft's wrapper in `lora` mode)."""
        return self.decoder.get_base_model() if self.mode == "lora" else self.decoder

    def _item_token_init(self) -> torch.Tensor:
        """Start the item token where the EOS stands: its token embedding, or (top) its mean state."""
        if self.mode == "top":
            last = self.offsets[1:] - 1
            return self.states[last].mean(0).clone()
        eos = self.token_ids[0, self.lengths[0] - 1]
        return self._inner().get_input_embeddings().weight[eos].detach().clone()

    def llm_parameters(self) -> list[nn.Parameter]:
        """The LLM's own weights that train (LR finetune.llm_lr); the item token is not among them."""
        return [p for p in self.decoder.parameters() if p.requires_grad]

    def _inputs(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded input states [b, T, D] and mask [b, T] of some items."""
        lengths = self.lengths[items]
        width = int(lengths.max())
        mask = (torch.arange(width, device=items.device).unsqueeze(0) < lengths.unsqueeze(1)).long()
        if self.mode == "top":
            rows = [self.states[self.offsets[i] : self.offsets[i + 1]] for i in items.tolist()]
            embeds = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        else:
            embeds = self._inner().get_input_embeddings()(self.token_ids[items, :width])
        return embeds, mask

    def encode(self, idx: torch.Tensor) -> torch.Tensor:
        """Standardised item vectors [len(idx), D] (float32) of item indices `idx` (any order,
        repeats allowed); in batches of similar length, with gradients when grad is enabled."""
        idx = idx.to(self.lengths.device)
        out: list[torch.Tensor] = []
        order: list[int] = []
        for batch in length_batches(self.lengths[idx].tolist(), self.batch_size):
            items = idx[batch]
            embeds, mask = self._inputs(items)
            if self.item_token is not None:
                embeds, mask = append_item_token(embeds, mask, self.item_token)
            states = layer_states(self._inner(), embeds, mask)
            lower = self.lower_sum[items] if self.n_lower else None
            out.append(pool_states([h.float() for h in states], mask, self.pooling, lower, self.n_lower))
            order += batch
        vectors = torch.cat(out)[torch.argsort(torch.tensor(order, device=idx.device))]
        return (vectors - self.mean) / self.std

    def save_adapters(self, path: Path) -> None:
        """LoRA mode: the adapters in peft's own format (adapter_config.json + safetensors)."""
        self.decoder.save_pretrained(str(path))

    def load_adapters(self, path: Path) -> None:
        """LoRA mode: replace the adapter weights with those saved by `save_adapters`."""
        from peft import set_peft_model_state_dict

        weights = load((Path(path) / "adapter_model.safetensors").read_bytes())
        result = set_peft_model_state_dict(self.decoder, weights)
        if result.unexpected_keys:
            raise ValueError(f"{path}: adapter keys {result.unexpected_keys[:3]} do not fit this model")


def top_states(
    decoder: nn.Module,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    cfg: FinetuneConfig,
    model_dir: Path,
    texts: list[str],
    cache_dir: Path,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(states entering the top k blocks [sum(lengths), D], per-item sum of the token-means of the
    depths below them [n_items, D]), from one frozen pass or the cache."""
    path = item_cache_path(cache_dir, model_dir, texts, cfg, f"top{k}")
    if path.is_file():
        cached = load(path.read_bytes())
        return cached["states"], cached["lower_sum"]
    n_layers = len(decoder_layers(decoder))
    split = n_layers - k  # index in layer_states of the input of block split + 1
    states = torch.empty(int(lengths.sum()), decoder.config.hidden_size)
    lower_sum = torch.zeros(len(ids), decoder.config.hidden_size)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    decoder.eval()
    label = f"cache lower states of {len(ids):,} items"
    with torch.no_grad(), progress_counter(label, len(ids), "items", progress) as advance:
        for batch in length_batches(lengths.tolist(), cfg.embed_batch_size):
            width = int(lengths[batch].max())
            mask = (torch.arange(width).unsqueeze(0) < lengths[batch].unsqueeze(1)).long()
            every = layer_states(decoder, decoder.get_input_embeddings()(ids[batch, :width]), mask)
            if split:
                lower_sum[batch] = torch.stack([_token_mean(s, mask) for s in every[:split]]).sum(0)
            for row, i in enumerate(batch):
                states[offsets[i] : offsets[i + 1]] = every[split][row, : lengths[i]]
            advance(len(batch))
    atomic_write_bytes(path, save({"states": states.contiguous(), "lower_sum": lower_sum.contiguous()}))
    return states, lower_sum
