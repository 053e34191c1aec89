"""Tests for cprec_core/pack.py: packing loses, duplicates and pads nothing; output is deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from transformers import AutoTokenizer

from cprec_core import pack as pack_module
from cprec_core.artifacts import read_manifest, read_table, write_table
from cprec_core.config import Config
from cprec_core.models import train_tokenizer
from cprec_core.pack import PackError, corpus_texts, pack_corpus, tokenize_documents
from cprec_core.schema import CORPUS_SCHEMA, GOLD_CORPUS, GOLD_PACKED

SEQ_LEN = 16


def corpus_rows(n: int = 300) -> list[dict]:
    cats = ["Fantasy", "Cables", "Kitchen", "Running", "Puzzles"]
    rows = []
    for i in range(n):
        kind = "mixed" if i % 3 == 0 else "domain"
        scope = "across domains" if kind == "mixed" else "in Books"
        items = "\n".join(f"{k + 1}. Item {(i * 7 + k) % 41} ({cats[(i + k) % 5]})" for k in range(1 + i % 4))
        rows.append(
            {
                "doc_id": f"d{i:04d}",
                "user_id": f"u{i % 50}",
                "kind": kind,
                "domains": ["Books"],
                "n_items": 1 + i % 4,
                "text": f"A user's interactions {scope}:\n{items}",
            }
        )
    return rows


def make_cfg(root: Path, **pack) -> Config:
    return Config.model_validate(
        {"paths": {"root": str(root)}, "pack": {"seq_len": SEQ_LEN, "batch_docs": 7, "num_proc": 1, **pack}}
    )


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([r["text"] for r in corpus_rows()], 300).save_pretrained(out)
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_table(GOLD_CORPUS, tmp_path, pa.Table.from_pylist(corpus_rows(), schema=CORPUS_SCHEMA))
    return tmp_path


def packed_blocks(root: Path) -> np.ndarray:
    return np.array(read_table(GOLD_PACKED, root)["input_ids"].to_pylist(), dtype=np.int64)


def test_pack_blocks_by_hand(monkeypatch) -> None:
    # docs [1 2 3] [4 5] [6], order (2, 0, 1), EOS = 0 -> stream 6 0 1 2 3 0 4 5 0
    # -> blocks [6 0 1 2] [3 0 4 5], tail [0] dropped. One document per chunk exercises the carry.
    monkeypatch.setattr(pack_module, "PACK_CHUNK_DOCS", 1)
    tokens = np.array([1, 2, 3, 4, 5, 6], dtype=np.int32)
    blocks = list(pack_module._pack_blocks(tokens, np.array([3, 2, 1]), np.array([2, 0, 1]), 0, 4))
    assert np.concatenate(blocks).tolist() == [[6, 0, 1, 2], [3, 0, 4, 5]]


def test_packing_loses_and_duplicates_no_token(root: Path, tokenizer_dir: Path) -> None:
    cfg = make_cfg(root)
    stats = pack_corpus(cfg, tokenizer_dir)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # the shuffled stream: corpus in read order, permuted by corpus.seed, each doc followed by EOS
    texts = read_table(GOLD_CORPUS, root)["text"].to_pylist()
    assert list(corpus_texts(cfg)) == texts  # the streamed order is the artifact's read order
    order = np.random.default_rng(cfg.corpus.seed).permutation(len(texts))
    docs = tokenize_documents([texts[i] for i in order], tok)
    stream = [t for d in docs for t in d]
    blocks = packed_blocks(root)

    assert blocks.shape == (stats["blocks"], SEQ_LEN)  # every block exactly seq_len, no padding
    assert stats["blocks"] == len(stream) // SEQ_LEN
    assert blocks.reshape(-1).tolist() == stream[: stats["blocks"] * SEQ_LEN]
    assert stats["waste_tokens"] == len(stream) - stats["blocks"] * SEQ_LEN < SEQ_LEN
    assert stats["documents"] == 300 and stats["tokens"] == len(stream)
    assert stats["waste_pct"] == pytest.approx(100 * stats["waste_tokens"] / len(stream), abs=1e-4)
    # EOS ends every document and appears nowhere else (the tail holds the rest)
    eos = tok.eos_token_id
    assert stream.count(eos) == 300
    ends = np.cumsum([len(d) for d in docs]) - 1
    assert np.flatnonzero(np.array(stream) == eos).tolist() == ends.tolist()
    manifest = read_manifest(GOLD_PACKED, root)
    assert manifest.rows == stats["blocks"]
    assert {k: manifest.extra[k] for k in ("documents", "tokens", "waste_tokens")} == {
        k: stats[k] for k in ("documents", "tokens", "waste_tokens")
    }


def test_packing_is_deterministic_and_independent_of_processes(root: Path, tokenizer_dir: Path) -> None:
    one = pack_corpus(make_cfg(root), tokenizer_dir)
    again = pack_corpus(make_cfg(root), tokenizer_dir)
    multi = pack_corpus(make_cfg(root, num_proc=2, batch_docs=5), tokenizer_dir)
    assert one["fingerprint"] == again["fingerprint"] == multi["fingerprint"]
    assert one["blocks"] == multi["blocks"]
    reseeded = make_cfg(root)
    reseeded.corpus.seed = 1
    other = pack_corpus(reseeded, tokenizer_dir)
    assert other["fingerprint"] != one["fingerprint"]
    assert other["tokens"] == one["tokens"]  # the same documents, in another order


def test_config_hash_follows_tokenizer_and_pack_config(root: Path, tokenizer_dir: Path, tmp_path) -> None:
    pack_corpus(make_cfg(root), tokenizer_dir)
    first = read_manifest(GOLD_PACKED, root).config_hash
    pack_corpus(make_cfg(root, num_proc=2), tokenizer_dir)
    assert read_manifest(GOLD_PACKED, root).config_hash != first
    other_tok = tmp_path / "tok2"
    train_tokenizer([r["text"] for r in corpus_rows(50)], 300).save_pretrained(other_tok)
    pack_corpus(make_cfg(root), other_tok)
    assert read_manifest(GOLD_PACKED, root).config_hash != first


def test_clear_errors(tmp_path: Path, tokenizer_dir: Path) -> None:
    rows = corpus_rows(20)
    rows[13]["text"] = None
    write_table(GOLD_CORPUS, tmp_path, pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA))
    # domain rows are those with i % 3 != 0: i = 1, 2, 4, 5, 7, 8, 10, 11, 13 -> row 8 of that file
    with pytest.raises(PackError, match=r"kind=domain/part-0.parquet: row 8: field text: null"):
        pack_corpus(make_cfg(tmp_path), tokenizer_dir)
    with pytest.raises(PackError, match="tokenizer.json: missing"):
        pack_corpus(make_cfg(tmp_path), tmp_path / "no-tokenizer")
