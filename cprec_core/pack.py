"""Batched tokenization and sequence packing of the CPT corpus (DESIGN.md step 4; PAPER.md §4).

Reads GOLD_CORPUS (text column, streamed by record batches) and a tokenizer directory
(`tokenizer.json`). Writes GOLD_PACKED: one row per block of exactly `pack.seq_len` token ids.

Pass 1 tokenizes documents in corpus order (files sorted, batches of `pack.batch_docs`, over
`pack.num_proc` processes whose results are consumed in submission order, so the output never
depends on process scheduling) into a scratch token file on disk. Pass 2 visits the documents in
a permutation seeded by `corpus.seed` (a document-level shuffle: a block is a contiguous token
stream), appends EOS after every document, and cuts the stream into full blocks; the final partial
block is dropped and counted as waste. Memory stays bounded: a few batches plus three int64 per document.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import signal
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from cprec_core.artifacts import DatasetWriter, config_hash, parquet_files, read_manifest, sha256_file
from cprec_core.config import Config
from cprec_core.errors import UserError
from cprec_core.locks import holds_run_lock
from cprec_core.paths import scratch_dir
from cprec_core.progress import progress_counter
from cprec_core.schema import GOLD_CORPUS, GOLD_PACKED

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TOKEN_DTYPE = np.int32
BLOCK_TOKENS_PER_ROW_GROUP = 1 << 20  # ~4 MB of int32 per Parquet row group: cheap to memory-map
PACK_CHUNK_DOCS = 8192  # documents gathered per vectorized packing step

_worker_tokenizer: Tokenizer | None = None


class PackError(UserError, ValueError):
    """The corpus or tokenizer cannot be packed; the message names the file and the problem."""


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (the one encoding used for packing and probes)."""
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def tokenize_documents(texts: Iterable[str], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Each document's ids exactly as it appears in the packed stream: its tokens, then EOS."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise PackError(f"tokenizer {tokenizer.name_or_path}: has no eos_token; packing needs one")
    return [[*ids, eos] for ids in _encode(tokenizer.backend_tokenizer, list(texts))]


def _init_worker(tokenizer_json: str) -> None:
    global _worker_tokenizer
    # a forked worker inherits its parent's SIGTERM handler (Prefect's raises in the worker when
    # the pool is shut down); the default handler just ends it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per process; the pool is the parallelism
    _worker_tokenizer = Tokenizer.from_file(tokenizer_json)


def _encode_flat(tokenizer: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A batch as (all its tokens concatenated, int32; each document's length, int64)."""
    docs = _encode(tokenizer, texts)
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    flat = np.fromiter(itertools.chain.from_iterable(docs), dtype=TOKEN_DTYPE, count=int(lengths.sum()))
    return flat, lengths


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker_tokenizer is not None
    return _encode_flat(_worker_tokenizer, texts)


def _text_batches(files: list[str], batch_docs: int) -> Iterator[list[str]]:
    """The corpus texts in a fixed order (sorted files, row order), batch_docs at a time."""
    row = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_docs, columns=["text"]):
            col = batch.column(0)
            if col.null_count:
                bad = row + col.is_null().to_pylist().index(True)
                raise PackError(f"{f}: row {bad}: field text: null (every document needs text)")
            row += len(col)
            yield col.to_pylist()


def corpus_texts(cfg: Config) -> Iterator[str]:
    """Stream GOLD_CORPUS texts in packing order (e.g. to train the tiny model's tokenizer)."""
    for texts in _text_batches(parquet_files(GOLD_CORPUS, cfg.root), cfg.pack.batch_docs):
        yield from texts


def _encoded(
    batches: Iterator[list[str]], tokenizer_json: Path, num_proc: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Encoded batches in input order; at most 2 batches per process in flight (bounded memory)."""
    if num_proc == 1:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        for texts in batches:
            yield _encode_flat(tokenizer, texts)
        return
    # fork: workers inherit the imports (fast start); results are taken in submission order
    pool = mp.get_context("fork").Pool(num_proc, initializer=_init_worker, initargs=(str(tokenizer_json),))
    pending: deque[AsyncResult] = deque()
    try:
        for texts in batches:
            pending.append(pool.apply_async(_encode_in_worker, (texts,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()


def _tokenize_to_file(
    files: list[str], cfg: Config, tokenizer_json: Path, scratch: Path, total_docs: int, progress: bool
) -> np.ndarray:
    """Pass 1: write every document's tokens to `scratch` (int32); return per-document lengths."""
    lengths: list[np.ndarray] = []
    encoded = _encoded(_text_batches(files, cfg.pack.batch_docs), tokenizer_json, cfg.pack.num_proc)
    # the bar has no refresh thread: the pool forks while it is open
    with (
        open(scratch, "wb") as out,
        progress_counter(f"tokenize {total_docs:,} documents", total_docs, "documents", progress) as advance,
    ):
        for tokens, doc_lengths in encoded:
            tokens.tofile(out)
            lengths.append(doc_lengths)
            advance(len(doc_lengths))
    return np.concatenate(lengths) if lengths else np.empty(0, np.int64)


def _pack_blocks(
    tokens: np.ndarray, lengths: np.ndarray, order: np.ndarray, eos: int, seq_len: int
) -> Iterator[np.ndarray]:
    """Pass 2: the documents in `order`, each followed by EOS, as (n, seq_len) arrays of full blocks."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    carry = np.empty(0, dtype=TOKEN_DTYPE)
    for lo in range(0, len(order), PACK_CHUNK_DOCS):
        docs = order[lo : lo + PACK_CHUNK_DOCS]
        span = lengths[docs] + 1  # tokens + EOS
        ends = np.cumsum(span)
        offset_in_doc = np.arange(ends[-1]) - np.repeat(ends - span, span)
        src = np.repeat(starts[docs], span) + offset_in_doc
        stream = tokens[np.minimum(src, len(tokens) - 1)] if len(tokens) else np.zeros(len(src), TOKEN_DTYPE)
        stream[ends - 1] = eos  # the EOS slot of each document
        stream = np.concatenate([carry, stream])
        n_full = len(stream) // seq_len
        if n_full:
            yield stream[: n_full * seq_len].reshape(n_full, seq_len)
        carry = stream[n_full * seq_len :]


def _blocks_table(blocks: np.ndarray) -> pa.Table:
    n, seq_len = blocks.shape
    offsets = pa.array(np.arange(0, (n + 1) * seq_len, seq_len, dtype=np.int32))
    values = pa.array(blocks.reshape(-1), type=pa.int32())
    return pa.table({"input_ids": pa.ListArray.from_arrays(offsets, values)})


@holds_run_lock
def pack_corpus(cfg: Config, tokenizer_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Tokenize GOLD_CORPUS, shuffle documents, pack into GOLD_PACKED; return the packing stats.

    Stats: documents, tokens (document tokens + one EOS each), blocks, packed_tokens, waste_tokens
    (the dropped final partial block), waste_pct, seq_len, fingerprint, seconds, tokens_per_s.
    """
    t0 = time.perf_counter()
    tokenizer_json = Path(tokenizer_dir) / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise PackError(
            f"{tokenizer_json}: missing: packing needs a fast tokenizer saved with save_pretrained"
        )
    eos = _eos_id(Path(tokenizer_dir))
    corpus = read_manifest(GOLD_CORPUS, cfg.root)
    files = parquet_files(GOLD_CORPUS, cfg.root)
    cfg_hash = config_hash(
        cfg.pack,
        {"tokenizer": sha256_file(tokenizer_json), "corpus": corpus.fingerprint, "seed": cfg.corpus.seed},
    )
    scratch_root = scratch_dir(cfg.root)
    scratch_root.mkdir(parents=True, exist_ok=True)
    seq_len = cfg.pack.seq_len
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix="pack-") as scratch:
        token_file = Path(scratch) / "tokens.int32"
        lengths = _tokenize_to_file(files, cfg, tokenizer_json, token_file, corpus.rows, progress)
        tokens = (
            np.memmap(token_file, dtype=TOKEN_DTYPE, mode="r") if lengths.sum() else np.empty(0, TOKEN_DTYPE)
        )
        order = np.random.default_rng(cfg.corpus.seed).permutation(len(lengths))
        n_tokens = int(lengths.sum()) + len(lengths)
        rows_per_group = max(1, BLOCK_TOKENS_PER_ROW_GROUP // seq_len)
        with DatasetWriter(GOLD_PACKED, cfg.root, cfg_hash, row_group_size=rows_per_group) as writer:
            for blocks in _pack_blocks(tokens, lengths, order, eos, seq_len):
                writer.write(_blocks_table(blocks))
            n_blocks = writer.rows
            stats = {
                "documents": len(lengths),
                "tokens": n_tokens,
                "blocks": n_blocks,
                "packed_tokens": n_blocks * seq_len,
                "waste_tokens": n_tokens - n_blocks * seq_len,
                "waste_pct": round(100 * (n_tokens - n_blocks * seq_len) / max(n_tokens, 1), 4),
                "seq_len": seq_len,
                "eos_token_id": eos,
            }
            writer.extra.update(stats)
        del tokens
    seconds = time.perf_counter() - t0
    assert writer.manifest is not None
    return {
        **stats,
        "fingerprint": writer.manifest.fingerprint,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(n_tokens / seconds, 1),
    }


def _eos_id(tokenizer_dir: Path) -> int:
    """The EOS id as save_pretrained recorded it, read without importing torch/transformers."""
    token = None
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = tokenizer_dir / name
        if token is None and path.is_file():
            token = json.loads(path.read_text()).get("eos_token")
    if isinstance(token, dict):  # AddedToken serialized as {"content": ..., ...}
        token = token.get("content")
    eos = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).token_to_id(token) if token else None
    if eos is None:
        raise PackError(f"{tokenizer_dir}: no eos_token in tokenizer_config.json; packing needs one")
    return eos
