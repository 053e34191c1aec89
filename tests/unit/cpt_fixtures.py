"""A tiny CPT workspace shared by the CPT tests: corpus, probe, tiny Llama, packed blocks.

Built with the pipeline's own functions (build_tiny_model, pack_corpus), so the blocks are what
the pack stage really writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from cprec_core.artifacts import write_table
from cprec_core.config import Config
from cprec_core.models import build_tiny_model
from cprec_core.pack import pack_corpus
from cprec_core.schema import CORPUS_SCHEMA, GOLD_CORPUS, GOLD_PROBE

SEQ_LEN = 32
# 30 optimizer steps of 4 blocks: warmup 3 steps (0.1 x 30), stable 21, anneal the last 6 (0.2 x 30).
CPT_DEFAULTS: dict[str, Any] = {
    "micro_batch_size": 4,
    "max_steps": 30,
    "log_every": 1,
    "checkpoint_every": 10,
    "keep_checkpoints": 2,
    "probe_max_docs": 8,
    "schedule": {"peak_lr": 3e-3, "warmup_frac": 0.1, "anneal_frac": 0.2},
}


def _text(user: int) -> str:
    """A repetitive user history: three items cycling, so a tiny model can learn it in 30 steps."""
    items = [f"item {(user * k) % 5}" for k in (1, 2, 3)]
    return f"user {user} bought " + ", then ".join(items * 2) + "."


def _corpus(users: range, kind: str) -> pa.Table:
    rows = [
        {"doc_id": f"{kind}-{u}", "user_id": str(u), "kind": kind, "domains": ["Books"], "n_items": 6,
         "text": _text(u)}
        for u in users
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA)


def make_workspace(root: Path) -> Config:
    """Write GOLD_CORPUS (80 documents), GOLD_PROBE (8 held-out users), a tiny Llama trained on
    the corpus's BPE, and GOLD_PACKED blocks of SEQ_LEN tokens; return the config pointing at it."""
    cfg = Config.model_validate({
        "paths": {"root": str(root)},
        "pack": {"seq_len": SEQ_LEN, "num_proc": 1},
        "model": {"tiny": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2,
                           "num_heads": 2, "max_position_embeddings": 64}},
        "cpt": CPT_DEFAULTS,
    })  # fmt: skip
    corpus = _corpus(range(80), "domain")
    write_table(GOLD_CORPUS, root, corpus)
    write_table(GOLD_PROBE, root, _corpus(range(1000, 1008), "domain"))
    build_tiny_model(base_dir(cfg), corpus["text"].to_pylist(), cfg.model.tiny)
    pack_corpus(cfg, base_dir(cfg))
    return cfg


def base_dir(cfg: Config) -> Path:
    return cfg.root / "base"


def with_cpt(cfg: Config, **cpt: Any) -> Config:
    """A copy of `cfg` with some cfg.cpt values changed (nested launcher values as a dict)."""
    data = cfg.model_dump(mode="json")
    for key, value in cpt.items():
        if isinstance(value, dict):
            data["cpt"][key] = {**data["cpt"][key], **value}
        else:
            data["cpt"][key] = value
    return Config.model_validate(data)
