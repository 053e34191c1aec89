"""cprec_core/rec/item_llm.py: the item LLM that trains in the `full`, `lora` and `top` modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rec_fixtures import DOMAIN, tiny_config, write_silver

from cprec_core.artifacts import read_table
from cprec_core.rec.build import build_recommender
from cprec_core.rec.data import load_domain
from cprec_core.rec.finetune import finetune_variant, run_dir
from cprec_core.rec.item_encoder import load_item_lm
from cprec_core.rec.item_llm import ItemLLM, append_item_token, layer_states, top_decoder
from cprec_core.rec.ranking import model_score_fn, rank_users
from cprec_core.rec.train import load_trainable
from cprec_core.schema import REC_RANKS

TEXTS = ["product 1 (snacks)", "product 22", "product 10 (snacks)", "product 3"]
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: exact, repeatable numbers


@pytest.fixture(scope="module")
def lm(tiny_lms: tuple[Path, Path]) -> Path:
    """The cpt tiny LLM of tests/unit/conftest.py."""
    return tiny_lms[0]


def _item_llm(lm: Path, tmp_path: Path, mode: str, **ft: object) -> ItemLLM:
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, encoder_mode=mode, variants=["cpt"], **ft).finetune
    return ItemLLM(lm, TEXTS, cfg, tmp_path / "cache", CPU)


@pytest.mark.parametrize("mode", ["full", "lora", "top"])
def test_gradients_reach_the_llm_weights_in_the_trained_modes(lm: Path, tmp_path: Path, mode: str) -> None:
    enc = _item_llm(lm, tmp_path, mode)
    trained = dict(enc.named_parameters())
    enc.encode(torch.tensor([0, 2, 3])).pow(2).sum().backward()
    trainable = {n for n, p in trained.items() if p.requires_grad}
    with_grad = {n for n, p in trained.items() if p.grad is not None}
    nonzero = {n for n in with_grad if trained[n].grad.abs().sum() > 0}
    assert trainable and with_grad == trainable
    # LoRA's B starts at zero, so A gets no signal until B moves: every B must get one now
    assert nonzero == {n for n in trainable if "lora_A" not in n}
    frozen = {n for n, p in trained.items() if not p.requires_grad}
    if mode == "full":  # every decoder weight trains, embeddings included
        assert not frozen and any("embed_tokens" in n for n in with_grad)
    if mode == "lora":  # only the adapters; the base projections they wrap stay as they were
        assert all("lora_" in n for n in with_grad) and any("q_proj.base_layer" in n for n in frozen)
    if mode == "top":  # the tiny LM has 2 blocks: the top one trains, and nothing else is even kept
        assert all(n.startswith("decoder.layers.0.") or n.startswith("decoder.norm") for n in with_grad)
        assert len(enc.decoder.layers) == 1 and enc.decoder.embed_tokens is None


def test_frozen_mode_sends_no_gradient_into_the_llm(lm: Path, tmp_path: Path) -> None:
    write_silver(tmp_path)
    cfg = tiny_config(tmp_path, variants=["cpt"])
    model, info = build_recommender(cfg, load_domain(tmp_path, DOMAIN), "cpt", lm, CPU)
    assert info["encoder_mode"] == "frozen" and info["llm_params_trained"] == 0
    assert model.items.llm is None  # the frozen table is a buffer, not parameters
    model(torch.tensor([[30, 1, 2, 3]])).sum().backward()
    assert all(p.grad is not None for p in model.items.adapter.parameters())
    assert "llm_emb" not in dict(model.named_parameters())


def test_top_modes_cached_states_give_the_full_forward_pass(lm: Path, tmp_path: Path) -> None:
    decoder = load_item_lm(lm)[0].get_decoder().eval()
    enc = _item_llm(lm, tmp_path, "top", train_top_layers=1).eval()
    # the whole decoder on the token ids, against the top block on the cached states
    for i, text in enumerate(TEXTS):
        n = int(enc.lengths[i])
        ids = enc.token_ids[i : i + 1, :n]
        full = decoder(input_ids=ids, use_cache=False).last_hidden_state
        cached = enc.states[enc.offsets[i] : enc.offsets[i + 1]].unsqueeze(0)
        top = enc.decoder(
            inputs_embeds=cached, attention_mask=torch.ones(1, n, dtype=torch.long), use_cache=False
        )
        assert torch.allclose(top.last_hidden_state, full, atol=1e-5), text
    # and the cache file is reused: a second encoder reads it instead of recomputing
    (cache,) = (tmp_path / "cache").glob("*.safetensors")
    stamp = cache.stat().st_mtime_ns
    again = _item_llm(lm, tmp_path, "top", train_top_layers=1)
    assert cache.stat().st_mtime_ns == stamp and torch.equal(again.states, enc.states)


def test_layer_states_match_hf_hidden_states_and_top_decoder_continues_them(lm: Path) -> None:
    model, _ = load_item_lm(lm)
    decoder = model.get_decoder().eval()
    ids = torch.tensor([[5, 9, 12, 40], [7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    ours = layer_states(decoder, decoder.get_input_embeddings()(ids), mask)
    theirs = decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == 3  # embeddings, block 1, final normed output
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a * mask.unsqueeze(-1), b * mask.unsqueeze(-1), atol=1e-6)
    top = layer_states(top_decoder(decoder, 1), ours[1], mask)
    assert torch.allclose(top[-1] * mask.unsqueeze(-1), ours[-1] * mask.unsqueeze(-1), atol=1e-6)


def test_item_token_goes_right_after_each_rows_text() -> None:
    embeds = torch.zeros(2, 3, 2)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out, grown = append_item_token(embeds, mask, torch.tensor([7.0, 8.0]))
    assert grown.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert out[0, 3].tolist() == [7.0, 8.0] and out[1, 1].tolist() == [7.0, 8.0]
    assert out[0, :3].abs().sum() == 0 and out[1, 2:].abs().sum() == 0


def test_trained_encoder_starts_standardised_and_encode_is_order_free(lm: Path, tmp_path: Path) -> None:
    enc = _item_llm(lm, tmp_path, "full", embed_batch_size=2).eval()
    with torch.no_grad():
        every = enc.encode(torch.arange(4))
        some = enc.encode(torch.tensor([3, 0, 3]))
    assert torch.allclose(every.mean(0), torch.zeros(enc.hidden_size), atol=1e-5)
    assert torch.allclose(every.std(0), torch.ones(enc.hidden_size), atol=1e-4)
    assert torch.allclose(some, every[[3, 0, 3]], atol=1e-5)  # length-bucketed batches, put back in order


def test_a_saved_lora_run_reloads_to_identical_scores(lm: Path, tmp_path: Path) -> None:
    write_silver(tmp_path)
    cfg = tiny_config(
        tmp_path, encoder_mode="lora", variants=["cpt"], max_epochs=2, lr=1e-2, llm_lr=1e-2, llm_warmup=False
    )
    out = run_dir(cfg, DOMAIN, "cpt", 0)
    res = finetune_variant(cfg, DOMAIN, "cpt", 0, lm, None, out)
    assert (out / "lora" / "adapter_config.json").is_file()
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    data = load_domain(tmp_path, DOMAIN)
    saved = read_table(REC_RANKS, out).to_pandas()
    saved_valid = saved[saved.split == "valid"]["rank"].tolist()

    from safetensors.torch import load_file

    def rebuilt(weights: dict[str, torch.Tensor]) -> list[int]:
        torch.manual_seed(123)  # another init: everything must come from the saved files
        model, _ = build_recommender(cfg, data, "cpt", lm, CPU)
        load_trainable(model, weights)
        return rank_users(model_score_fn(model, cfg.finetune.max_seq_len, CPU), data, "valid").tolist()

    weights = load_file(out / "model.safetensors")
    assert rebuilt(weights) == saved_valid
    # the peft-format adapters alone carry the LoRA weights: swap them in for the saved ones
    torch.manual_seed(7)
    model, _ = build_recommender(cfg, data, "cpt", lm, CPU)
    load_trainable(
        model,
        {k: v for k, v in weights.items() if "lora_" not in k}
        | {k: v for k, v in dict(model.named_parameters()).items() if "lora_" in k},
    )
    lora = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora and all(v.abs().sum() > 0 for v in lora.values())  # trained away from B = 0
    model.items.llm.load_adapters(out / "lora")
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in lora.items())
    ranks = rank_users(model_score_fn(model, cfg.finetune.max_seq_len, CPU), data, "valid").tolist()
    assert ranks == saved_valid and res["item_encoder"]["encoder_mode"] == "lora"
