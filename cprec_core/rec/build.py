"""One factory for every trained recommender (PAPER.md §5; after HLLM, whose item and user models
are built together): which item encoder, which user model, for a variant and its encoder mode.

Reads the checkpoint directory of LLM variants (and the embedding / lower-state caches under
`<root>/cache/`); writes those caches. The variant `sasrec` needs no checkpoint.

- item encoder: `frozen` = cached LLM embeddings, standardised (cprec_core.rec.item_encoder);
  `full` / `lora` / `top` = an `ItemLLM` that trains (cprec_core.rec.item_llm); either behind the
  adapter, with a learned id vector added when finetune.item_id_embedding is set.
- user model: `light` = a small causal transformer (finetune.hidden_size wide); `llm` = the same
  checkpoint's decoder reading item embeddings (the adapter then maps to the LLM's width).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cprec_core.config import Config
from cprec_core.paths import cache_dir
from cprec_core.prompts import item_text
from cprec_core.rec.baselines import build_sasrec
from cprec_core.rec.data import DomainData
from cprec_core.rec.item_encoder import TextItemEncoder, item_embeddings, load_item_lm, standardize
from cprec_core.rec.item_llm import ItemLLM
from cprec_core.rec.user_model import LLMUserRecommender, Recommender, SequenceRecommender


def build_recommender(
    cfg: Config,
    data: DomainData,
    variant: str,
    model_dir: Path | None,
    device: torch.device,
    progress: bool = False,
) -> tuple[Recommender, dict[str, Any]]:
    """The untrained recommender of `variant` on `data`, and facts about it for results.json."""
    ft = cfg.finetune
    if variant == "sasrec":
        return build_sasrec(data.n_items, ft), {}
    mode = ft.variant_mode(variant)
    if mode is None or model_dir is None:
        raise ValueError(f"variant {variant!r} is not an LLM recommender with a checkpoint")
    texts = data.texts(lambda t, c: item_text(t, c, cfg.corpus.max_title_chars))
    source: torch.Tensor | ItemLLM
    if mode == "frozen":
        source = standardize(
            item_embeddings(model_dir, texts, ft, cache_dir(cfg, "item_emb"), device, progress)
        )
        llm_hidden = int(source.shape[1])
    else:
        mode_cfg = ft.model_copy(update={"encoder_mode": mode})
        source = ItemLLM(model_dir, texts, mode_cfg, cache_dir(cfg, "item_states"), device, progress)
        llm_hidden = source.hidden_size
    if ft.user_model == "light":
        model: Recommender = SequenceRecommender(
            TextItemEncoder(source, ft.hidden_size, ft.item_id_embedding), data.n_items, ft, "cosine"
        )
    else:
        decoder = load_item_lm(model_dir)[0].get_decoder()
        model = LLMUserRecommender(
            TextItemEncoder(source, llm_hidden, ft.item_id_embedding), data.n_items, decoder, ft
        )
    info = {
        "model_dir": str(model_dir),
        "llm_hidden": llm_hidden,
        "encoder_mode": mode,
        "user_model": ft.user_model,
        "item_id_embedding": ft.item_id_embedding,
        "llm_params_trained": sum(p.numel() for p in model.llm_parameters()),
    }
    return model, info
