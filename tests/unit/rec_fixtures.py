"""Tiny fixtures for the downstream recommender tests: silver tables, a tiny Llama + BPE tokenizer.

Synthetic domain: items 0..n-1 titled "product <i>"; every user walks the cycle i -> i+1 (mod n)
from a random start, so the next item is a deterministic function of the last one and a
sequential model that learns it reaches NDCG@10 near 1, while popularity stays near chance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from cprec_core.artifacts import write_table
from cprec_core.config import Config, config_from_dict
from cprec_core.schema import SILVER_EVENTS, SILVER_ITEMS

DOMAIN = "Grocery"


def item_title(i: int) -> str:
    return f"product {i}"


def write_silver(
    root: Path, n_items: int = 30, n_users: int = 40, min_len: int = 5, max_len: int = 9, seed: int = 0
) -> None:
    """Cyclic sequences; last event = test, second last = valid, the rest train."""
    rng = np.random.default_rng(seed)
    items = pa.table(
        {
            "domain": [DOMAIN] * n_items,
            "item_id": [f"i{i:03d}" for i in range(n_items)],
            "title": [item_title(i) for i in range(n_items)],
            "category": ["snacks" if i % 2 else None for i in range(n_items)],
        }
    )
    rows: dict[str, list] = {k: [] for k in SILVER_EVENTS.schema.names}
    for u in range(n_users):
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(n_items))
        for pos in range(length):
            rows["domain"].append(DOMAIN)
            rows["user_id"].append(f"u{u:03d}")
            rows["position"].append(pos)
            rows["item_id"].append(f"i{(start + pos) % n_items:03d}")
            rows["ts"].append(1_600_000_000 + 100 * pos)
            rows["split"].append("test" if pos == length - 1 else "valid" if pos == length - 2 else "train")
    write_table(SILVER_ITEMS, root, items)
    write_table(SILVER_EVENTS, root, pa.table(rows))


def write_sequences(root: Path, sequences: dict[str, list[str]], item_ids: list[str]) -> None:
    """Hand-made silver tables: given chronological item ids per user (last = test, second last = valid)."""
    write_table(
        SILVER_ITEMS,
        root,
        pa.table(
            {
                "domain": [DOMAIN] * len(item_ids),
                "item_id": item_ids,
                "title": [f"title {i}" for i in item_ids],
                "category": ["cat"] * len(item_ids),
            }
        ),
    )
    rows: dict[str, list] = {k: [] for k in SILVER_EVENTS.schema.names}
    for user, seq in sequences.items():
        for pos, item in enumerate(seq):
            split = "test" if pos == len(seq) - 1 else "valid" if pos == len(seq) - 2 else "train"
            for k, v in zip(rows, (DOMAIN, user, pos, item, 1_600_000_000 + pos, split), strict=True):
                rows[k].append(v)
    write_table(SILVER_EVENTS, root, pa.table(rows))


def build_tiny_lm(out_dir: Path, texts: list[str], seed: int) -> Path:
    """A seeded random tiny Llama and a BPE tokenizer trained on `texts`, saved HF-style."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(300, len(tokenizer)),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def tiny_config(root: Path, **finetune: object) -> Config:
    """A config sized for seconds-long tests; `finetune` overrides the finetune section."""
    ft = {
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "dropout": 0.0,
        "max_seq_len": 8,
        "batch_size": 16,
        "num_negatives": 8,
        "lr": 5e-3,
        "max_epochs": 6,
        "patience": 3,
        "embed_batch_size": 16,
        **finetune,
    }
    return config_from_dict(
        {
            "name": "t",
            "paths": {"root": str(root)},
            "domains": {"pretrain": ["Books"], "downstream": [DOMAIN]},
            "finetune": ft,
            "evaluate": {"seeds": [0], "ks": [5, 10]},
        }
    )


def corpus_texts(n_items: int = 30) -> list[str]:
    return [f"Item: {item_title(i)} (snacks)" for i in range(n_items)] * 3


class NoTestMetrics(dict):
    """A results dict whose test metrics may not be read: a choice made on it used valid only."""

    def __getitem__(self, key: str) -> object:
        if key.startswith("test"):
            raise AssertionError(f"a choice read the test metric {key!r}")
        return super().__getitem__(key)
