"""cprec_core/rec/user_model.py: causal masking, InfoNCE negatives, and learning a pattern."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rec_fixtures import tiny_config

from cprec_core.rec.item_encoder import IdItemEncoder
from cprec_core.rec.user_model import SequenceRecommender, draw_negatives, infonce_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: exact, repeatable numbers


def _model(n_items: int = 6, **ft: object) -> SequenceRecommender:
    torch.manual_seed(0)
    cfg = tiny_config(Path("unused"), **ft).finetune
    return SequenceRecommender(IdItemEncoder(n_items, cfg.hidden_size), n_items, cfg, "cosine").eval()


def test_causal_no_position_sees_the_future_and_padding_is_ignored() -> None:
    model = _model()
    pad = 6
    a = model(torch.tensor([[pad, pad, 1, 2, 3, 4, 5, 0]]))
    b = model(torch.tensor([[pad, pad, 1, 2, 3, 5, 5, 5]]))
    # positions 0..4 have identical prefixes -> identical outputs; position 5 differs
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)
    assert not torch.allclose(a[0, 5], b[0, 5])
    # what stands in padded slots does not matter to real positions (padding is masked as keys)
    c = model(torch.tensor([[pad, pad, 1, 2, 3, 4, 5, 0]]))
    assert torch.allclose(a, c)
    assert torch.isfinite(a).all()


def test_infonce_never_uses_the_positive_as_a_negative() -> None:
    model = _model(n_items=3, temperature=1.0)
    preds = torch.randn(2, model.items.emb.weight.shape[1])
    targets = torch.tensor([1, 1])  # both rows have the same positive: one in-batch column
    gen = torch.Generator().manual_seed(0)
    # 50 uniform negatives over 3 items: item 1 is drawn ~17 times and must be masked each time,
    # so the loss equals a softmax over column [1] and the sampled items 0 and 2 only.
    loss = infonce_loss(model, preds, targets, draw_negatives(3, 50, gen))
    sampled = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(0))
    cand = torch.cat([torch.tensor([1]), sampled[sampled != 1]])
    logits = model.score(preds, model.items(cand))
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_user_model_learns_next_item_in_a_cycle() -> None:
    # sequences of the cycle 0 -> 1 -> ... -> 5 -> 0: after training, the top-scored item of
    # the last position is the next one in the cycle for every start
    n = 6
    model = _model(n_items=n, temperature=0.2)
    model.train()
    seqs = torch.tensor([[(s + i) % n for i in range(9)] for s in range(n)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        out = model(seqs[:, :8])
        negatives = draw_negatives(n, 4, gen)
        loss = infonce_loss(model, out.reshape(-1, out.shape[-1]), seqs[:, 1:].reshape(-1), negatives)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        top = model.score(model(seqs[:, :8])[:, -1], model.items.table()).argmax(1)
    assert top.tolist() == seqs[:, 8].tolist()


def test_llm_user_model_is_causal_and_padding_free(tmp_path: Path) -> None:
    from rec_fixtures import build_tiny_lm, corpus_texts

    from cprec_core.rec.item_encoder import load_item_lm
    from cprec_core.rec.user_model import LLMUserRecommender

    lm = build_tiny_lm(tmp_path / "lm", corpus_texts(), seed=3)
    decoder = load_item_lm(lm)[0].get_decoder()
    cfg = tiny_config(Path("unused")).finetune
    torch.manual_seed(0)
    n, pad = 6, 6
    model = LLMUserRecommender(IdItemEncoder(n, decoder.config.hidden_size), n, decoder, cfg).eval()
    with torch.no_grad():
        a = model(torch.tensor([[pad, pad, pad, 1, 2, 3]]))
        b = model(torch.tensor([[pad, 1, 2, 3, 4, 5]]))
        c = model(torch.tensor([[1, 2, 3, 5, 5, 5]]))
    # the same history 1, 2, 3 at any offset gives the same states: padding never counts, and the
    # RoPE positions restart at the first real item
    assert torch.allclose(a[0, 3:], b[0, 1:4], atol=1e-5)
    assert torch.allclose(a[0, 3:], c[0, :3], atol=1e-5)
    # causal: position 3 of b (item 3) does not see items 4 and 5
    assert not torch.allclose(b[0, 4], b[0, 5]) and torch.isfinite(a).all()
    assert {id(p) for p in model.llm_parameters()} == {id(p) for p in decoder.parameters()}
