"""cprec_core/rec/item_encoder.py: frozen LLM item embeddings, their cache, and the adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rec_fixtures import tiny_config

from cprec_core.artifacts import model_fingerprint
from cprec_core.rec.item_encoder import (
    TextItemEncoder,
    _pool,
    encode_texts,
    item_embeddings,
    standardize,
)

TEXTS = ["product 1 (snacks)", "product 2", "product 10 (snacks)"]
CPU = torch.device("cpu")


def test_two_checkpoints_give_different_embeddings(tiny_lms: tuple[Path, Path], tmp_path: Path) -> None:
    cpt, base = tiny_lms
    cfg = tiny_config(tmp_path).finetune
    a = item_embeddings(cpt, TEXTS, cfg, tmp_path / "cache", CPU)
    b = item_embeddings(base, TEXTS, cfg, tmp_path / "cache", CPU)
    assert a.shape == b.shape == (3, 32)  # 3 items x the tiny Llama's hidden size
    assert not torch.allclose(a, b)
    assert model_fingerprint(cpt) != model_fingerprint(base)
    # different texts get different vectors from the same model
    assert not torch.allclose(a[0], a[1])
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_cache_hit_returns_the_stored_embeddings(tiny_lms: tuple[Path, Path], tmp_path: Path) -> None:
    cpt, _ = tiny_lms
    cfg = tiny_config(tmp_path).finetune
    first = item_embeddings(cpt, TEXTS, cfg, tmp_path / "cache", CPU)
    (cached,) = (tmp_path / "cache").glob("*.safetensors")
    stamp = cached.stat().st_mtime_ns
    again = item_embeddings(cpt, TEXTS, cfg, tmp_path / "cache", CPU)
    assert torch.equal(first, again) and cached.stat().st_mtime_ns == stamp
    # another item list is another cache entry
    item_embeddings(cpt, TEXTS[:2], cfg, tmp_path / "cache", CPU)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_batching_does_not_change_embeddings_and_pooling_matters(tiny_lms: tuple[Path, Path]) -> None:
    cpt, _ = tiny_lms
    cfg = tiny_config(Path("unused")).finetune
    one_by_one = encode_texts(cpt, TEXTS, cfg.model_copy(update={"embed_batch_size": 1}), CPU)
    batched = encode_texts(cpt, TEXTS, cfg.model_copy(update={"embed_batch_size": 3}), CPU)
    assert torch.allclose(one_by_one, batched, atol=1e-5)  # right padding + mask: no leak between rows
    last = encode_texts(cpt, TEXTS, cfg.model_copy(update={"item_pooling": "last"}), CPU)
    assert not torch.allclose(last, batched)


def test_adapter_maps_to_user_model_width_and_table_equals_forward() -> None:
    torch.manual_seed(0)
    enc = TextItemEncoder(torch.randn(5, 32), hidden=16)
    assert enc.table().shape == (5, 16)
    assert torch.allclose(enc(torch.tensor([3, 1])), enc.table()[[3, 1]], atol=1e-6)
    assert "llm_emb" not in enc.state_dict()  # the frozen table is cached, not saved with the model


def test_item_ids_start_at_zero_and_add_to_the_text_vector() -> None:
    emb = torch.randn(5, 32)
    torch.manual_seed(0)
    plain = TextItemEncoder(emb, hidden=16)
    torch.manual_seed(0)
    with_ids = TextItemEncoder(emb, hidden=16, id_embedding=True)
    assert torch.equal(plain.table(), with_ids.table())  # zero ids: the text-only model at the start
    with torch.no_grad():
        with_ids.ids.weight[3] = 1.0
    assert torch.allclose(with_ids(torch.tensor([3])), plain(torch.tensor([3])) + 1.0)
    assert torch.allclose(with_ids.table()[3], plain.table()[3] + 1.0)
    assert "ids.weight" in with_ids.state_dict() and "llm_emb" not in with_ids.state_dict()


def test_standardize_gives_zero_mean_unit_std_per_dimension_and_removes_the_common_direction() -> None:
    # Rows share a big common vector (10, 10) plus small differences: cosine of raw rows ~ 1.
    emb = torch.tensor([[10.0, 11.0], [11.0, 10.0], [10.0, 10.0], [11.0, 11.0]])
    z = standardize(emb)
    # column 0 = [10, 11, 10, 11]: mean 10.5, sample std sqrt(4 * 0.25 / 3) = 0.57735
    assert torch.allclose(z[:, 0], torch.tensor([-1.0, 1.0, -1.0, 1.0]) * 0.5 / 0.57735, atol=1e-4)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(z.std(0), torch.ones(2), atol=1e-5)
    assert torch.nn.functional.cosine_similarity(z[0], z[1], dim=0) < -0.99  # opposite once centred
    # A constant dimension does not divide by zero.
    assert torch.isfinite(standardize(torch.ones(3, 2))).all()


def test_pooling_by_hand_on_two_layers_and_a_padded_row() -> None:
    # batch of 2, 3 positions, width 1; row 1 has one padding position at the end
    emb_layer = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [6.0], [100.0]]])
    last_layer = torch.tensor([[[10.0], [20.0], [30.0]], [[40.0], [60.0], [-100.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    states = (emb_layer, last_layer)
    # token means: layer 0 -> [2, 5], last -> [20, 50]; padding never counts
    assert torch.equal(_pool(states, mask, "mean"), torch.tensor([[20.0], [50.0]]))
    assert torch.equal(_pool(states, mask, "layers"), torch.tensor([[11.0], [27.5]]))
    assert torch.equal(_pool(states, mask, "last"), torch.tensor([[30.0], [60.0]]))


def test_encoding_without_a_bar_logs_its_progress(
    tiny_lms: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # on a worker (no TTY, progress off) the encoding loop still reports, in at most 10 lines
    import logging

    caplog.set_level(logging.INFO, logger="cprec_core.progress")
    cfg = tiny_config(tmp_path).finetune.model_copy(update={"embed_batch_size": 1})
    item_embeddings(tiny_lms[0], TEXTS, cfg, tmp_path / "cache", CPU, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "cprec_core.progress"]
    assert [line.split(", ")[0] for line in lines] == [
        "encode 3 items: 33% (1/3 items",
        "encode 3 items: 66% (2/3 items",
        "encode 3 items: 100% (3/3 items",
    ]
