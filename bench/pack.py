"""Benchmark 3: corpus render + tokenize + pack, tokens/s on this machine's cores, packing waste.

Bronze from bench/data.py goes through the behaviors stage (untimed) to silver; then, each in its
own process: `render` = cprec_core.corpus.build_corpus (silver → gold.corpus text), `pack` =
cprec_core.pack.pack_corpus (pack.num_proc tokenizer processes, document shuffle, fixed
blocks). The reference `hf` is what users write after the Hugging Face run_clm.py example:
`tokenizer(texts)` over batches of 1,000 documents in one process, EOS appended, everything
concatenated and cut into blocks in Python lists (no shuffle). Both must count the same tokens.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.behaviors import bench_config
from bench.common import BenchError, measure
from bench.data import write_bronze

HF_BATCH = 1000


def model_dir(root: Path) -> Path:
    return Path(root) / "tiny-model"


def prepare(root: Path, n_rows: int) -> None:
    """Bronze → silver (behaviors) under `root`; untimed set-up."""
    from cprec_core.behaviors import build_behaviors

    shutil.rmtree(root, ignore_errors=True)
    write_bronze(root, n_rows)
    build_behaviors(bench_config(str(root)))


def run_render(root: str) -> dict[str, Any]:
    """build_corpus: silver sequences → gold.corpus documents."""
    from cprec_core.corpus import build_corpus

    t0 = time.perf_counter()
    stats = build_corpus(bench_config(root))
    return {"seconds": time.perf_counter() - t0, "documents": stats["documents_total"]}


def build_tokenizer_model(root: str) -> dict[str, Any]:
    """The tiny model and its BPE tokenizer, trained on the corpus (set-up for pack and cpt)."""
    from cprec_core.models import build_tiny_model
    from cprec_core.pack import corpus_texts

    cfg = bench_config(root)
    t0 = time.perf_counter()
    build_tiny_model(model_dir(Path(root)), corpus_texts(cfg), cfg.model.tiny)
    return {"seconds": time.perf_counter() - t0}


def run_pack(root: str) -> dict[str, Any]:
    """pack_corpus with the config's pack.num_proc processes."""
    from cprec_core.pack import pack_corpus

    cfg = bench_config(root)
    t0 = time.perf_counter()
    stats = pack_corpus(cfg, model_dir(Path(root)))
    return {**stats, "seconds": time.perf_counter() - t0, "num_proc": cfg.pack.num_proc}


def run_hf(root: str) -> dict[str, Any]:
    """The run_clm.py way: tokenizer(batch), concatenate, cut into seq_len blocks."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from cprec_core.artifacts import parquet_files
    from cprec_core.schema import GOLD_CORPUS

    cfg = bench_config(root)
    tok = AutoTokenizer.from_pretrained(model_dir(Path(root)))
    seq_len, eos = cfg.pack.seq_len, tok.eos_token_id
    t0 = time.perf_counter()
    stream: list[int] = []
    for f in parquet_files(GOLD_CORPUS, Path(root)):
        texts = pq.read_table(f, columns=["text"])["text"].to_pylist()
        for lo in range(0, len(texts), HF_BATCH):
            for ids in tok(texts[lo : lo + HF_BATCH], add_special_tokens=False)["input_ids"]:
                stream.extend(ids)
                stream.append(eos)
    n_blocks = len(stream) // seq_len
    blocks = [stream[i * seq_len : (i + 1) * seq_len] for i in range(n_blocks)]
    return {"seconds": time.perf_counter() - t0, "tokens": len(stream), "blocks": len(blocks)}


def run(work: Path, quick: bool) -> dict[str, Any]:
    """Prepare silver, then render, pack and the reference, each in its own process."""
    n = 50_000 if quick else 1_000_000
    root = work / "root"
    t0 = time.perf_counter()
    prepare(root, n)
    prep_s = time.perf_counter() - t0
    render = measure("bench.pack:run_render", {"root": str(root)})
    tokenizer = measure("bench.pack:build_tokenizer_model", {"root": str(root)})
    pack = measure("bench.pack:run_pack", {"root": str(root)})
    hf = measure("bench.pack:run_hf", {"root": str(root)})
    if hf["tokens"] != pack["tokens"]:
        raise BenchError(f"pack: the reference counted {hf['tokens']} tokens, pack_corpus {pack['tokens']}")
    tokens = pack["tokens"]
    return {
        "interactions": n,
        "prepare_s": round(prep_s, 1),
        "tokens": tokens,
        "documents": pack["documents"],
        "waste_pct": pack["waste_pct"],
        "seq_len": pack["seq_len"],
        "contenders": {"render": render, "tokenizer_training": tokenizer, "pack": pack, "hf": hf},
        "pack_tokens_per_s": tokens / pack["seconds"],
        "render_pack_tokens_per_s": tokens / (render["seconds"] + pack["seconds"]),
        "hf_tokens_per_s": tokens / hf["seconds"],
        "root": str(root),
    }
