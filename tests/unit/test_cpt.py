"""CPT building blocks, no process launched: sampler, DeepSpeed config, checkpoint choice, probe, plot."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from cprec_core.artifacts import finish_manifest, write_table
from cprec_core.config import ConfigError, CPTConfig, load_config
from cprec_core.cpt.checkpoint import newest_good, tag_for
from cprec_core.cpt.data import BlockSampler, Position, check_blocks, load_blocks
from cprec_core.cpt.dsconfig import fill_ds_config
from cprec_core.cpt.probe import perplexity
from cprec_core.cpt.train import _lock_work_dir, plot_log
from cprec_core.schema import GOLD_PACKED


def test_sampler_two_ranks_split_the_one_rank_batch() -> None:
    # 10 blocks, global micro batch 4 -> 2 batches per epoch (blocks 8, 9 of the shuffle dropped).
    one = BlockSampler(10, micro_batch_size=4, world_size=1, rank=0, seed=7)
    r0 = BlockSampler(10, micro_batch_size=2, world_size=2, rank=0, seed=7)
    r1 = BlockSampler(10, micro_batch_size=2, world_size=2, rank=1, seed=7)
    assert one.batches_per_epoch == r0.batches_per_epoch == 2
    pos = Position()
    seen = []
    for _ in range(4):  # two epochs
        batch = one.indices(pos)
        assert list(batch) == [*r0.indices(pos), *r1.indices(pos)]
        seen.append(sorted(batch))
        pos = one.advance(pos)
    assert pos == Position(epoch=2, batch=0)
    epoch0 = set(seen[0]) | set(seen[1])
    assert len(epoch0) == 8  # no block twice within an epoch
    assert seen[:2] != seen[2:]  # epochs are shuffled differently


def test_sampler_is_a_pure_function_of_position() -> None:
    a = BlockSampler(50, 3, 1, 0, seed=1)
    b = BlockSampler(50, 3, 1, 0, seed=1)
    pos = Position()
    for _ in range(20):
        pos = a.advance(pos)
    # a fresh sampler (a resumed process) at the same position yields the same blocks
    assert list(a.indices(pos)) == list(b.indices(pos))
    assert pos == Position(epoch=1, batch=4)  # 50 // 3 = 16 batches per epoch; 20 = 16 + 4


def test_sampler_too_few_blocks_names_the_key() -> None:
    with pytest.raises(ValueError, match="cpt.micro_batch_size=4 x 2 processes"):
        BlockSampler(7, 4, 2, 0, 0)


def test_load_blocks(tmp_path: Path) -> None:
    write_table(GOLD_PACKED, tmp_path, pa.table({"input_ids": [[1, 2, 3], [4, 5, 6]]}))
    assert load_blocks(tmp_path).tolist() == [[1, 2, 3], [4, 5, 6]]
    write_table(GOLD_PACKED, tmp_path, pa.table({"input_ids": [[1, 2, 3], [4, 5]]}))
    with pytest.raises(ValueError, match="row 1: field input_ids: 2 tokens, expected 3"):
        load_blocks(tmp_path)


def test_check_blocks_against_the_model(tmp_path: Path) -> None:
    blocks = np.array([[0, 5, 9], [1, 2, 3]], dtype=np.int32)
    check_blocks(blocks, tmp_path, vocab_size=10, max_positions=3)
    with pytest.raises(ValueError, match=r"token id 9 >= the base model's vocab size 9"):
        check_blocks(blocks, tmp_path, vocab_size=9, max_positions=3)
    with pytest.raises(ValueError, match=r"pack.seq_len=3 .* max_position_embeddings=2"):
        check_blocks(blocks, tmp_path, vocab_size=10, max_positions=2)


def test_ds_config_filled_from_cpt() -> None:
    cpt = CPTConfig(micro_batch_size=2, grad_accum_steps=3, grad_clip=0.5, weight_decay=0.1, precision="bf16")
    ds = fill_ds_config(cpt, world_size=2)
    assert ds["train_batch_size"] == 12  # 2 x 3 x 2
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": True}
    assert ds["optimizer"]["params"]["torch_adam"] is True  # no CPU-Adam compile
    assert ds["optimizer"]["params"]["lr"] == cpt.schedule.peak_lr
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "none"}

    ds3 = fill_ds_config(CPTConfig(zero_stage=3, offload_optimizer=True, offload_params=True), 1)
    assert ds3["zero_optimization"]["stage"] == 3
    assert ds3["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds3["optimizer"]["params"]["torch_adam"] is False  # offloaded AdamW needs DeepSpeed's CPU Adam
    assert ds3["bf16"] == {"enabled": False}


def test_param_offload_on_zero2_fails_at_load() -> None:
    with pytest.raises(ConfigError, match=r"cpt.offload_params=true needs cpt.zero_stage=3"):
        load_config(None, ["cpt.offload_params=true"])


def test_ds_config_template_with_unknown_auto(tmp_path: Path) -> None:
    (tmp_path / "zero2.json").write_text('{"optimizer": {"params": {"lr": "auto", "foo": "auto"}}}')
    with pytest.raises(ConfigError, match=r"optimizer.params.foo"):
        fill_ds_config(CPTConfig(), 1, template_dir=tmp_path)


def _fake_checkpoint(ckpt_dir: Path, step: int) -> Path:
    tag_dir = ckpt_dir / tag_for(step)
    tag_dir.mkdir(parents=True)
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"x" * 100)
    finish_manifest(tag_dir, "cpt.checkpoint", step, None, "")
    return tag_dir


def test_newest_good_skips_truncated_and_unsealed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _fake_checkpoint(tmp_path, 4)
    newest = _fake_checkpoint(tmp_path, 8)
    assert newest_good(tmp_path) == "step00000008"
    # truncated file: size no longer matches the manifest
    (newest / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    # a save killed before sealing: no manifest at all
    (tmp_path / tag_for(12)).mkdir()
    with caplog.at_level(logging.WARNING):
        assert newest_good(tmp_path) == "step00000004"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "step00000012 is incomplete or corrupt" in warned
    assert "step00000008 is incomplete or corrupt" in warned
    # same size, flipped content: caught by the hash
    (tmp_path / "step00000004" / "mp_rank_00_model_states.pt").write_bytes(b"y" * 100)
    assert newest_good(tmp_path) is None


def _letter_tokenizer() -> PreTrainedTokenizerFast:
    """a..z -> ids 0..25, one token per letter; EOS "|" -> 26."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {chr(97 + i): i for i in range(26)} | {"|": 26}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="|")


def _model_predicting(token: int | None) -> LlamaForCausalLM:
    """Vocab 32; lm_head weights 0, so the logits are its bias: 10 on `token`, 0 elsewhere."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    torch.nn.init.zeros_(model.lm_head.weight)
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(32))
    if token is not None:
        with torch.no_grad():
            model.lm_head.bias[token] = 10.0
    return model


def test_perplexity_of_a_uniform_model_is_the_vocab_size() -> None:
    # every logit 0 -> p(token) = 1/32 for all tokens -> ppl = exp(log 32) = 32.
    tokenizer = _letter_tokenizer()
    assert tokenizer("abc", add_special_tokens=False)["input_ids"] == [0, 1, 2]
    ppl = perplexity(_model_predicting(None), tokenizer, ["abcdefg", "hij", "k"], seq_len=4, batch_size=2)
    assert math.isclose(ppl, 32.0, rel_tol=1e-5)


def test_perplexity_weights_tokens_not_documents() -> None:
    # The model always predicts "b" (id 1): p(b) = e^10 / (e^10 + 31), p(other) = 1 / (e^10 + 31).
    # "bbbb" -> [1,1,1,1,EOS]: 3 predictions of b, 1 of EOS; "ac" -> [0,2,EOS]: 2 of others.
    # mean NLL over the 6 predicted tokens = (3 * -log p(b) + 3 * -log p(other)) / 6.
    z = math.exp(10) + 31
    want = math.exp((3 * -math.log(math.exp(10) / z) + 3 * -math.log(1 / z)) / 6)
    got = perplexity(_model_predicting(1), _letter_tokenizer(), ["bbbb", "ac"], seq_len=8, batch_size=1)
    assert math.isclose(got, want, rel_tol=1e-5)


def test_plot_log(tmp_path: Path) -> None:
    records = [{"step": s, "loss": 5.0 - 0.1 * s, "lr": 1e-3} for s in range(1, 6)]
    plot_log(records, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_work_dir_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    fd = _lock_work_dir(tmp_path / "w")
    with pytest.raises(RuntimeError, match=r"another CPT process is still running on it"):
        _lock_work_dir(tmp_path / "w")
    os.close(fd)  # what the holder's death does
    os.close(_lock_work_dir(tmp_path / "w"))


def test_target_probe_scores_only_the_held_out_items_text() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from cprec_core.cpt.probe import target_perplexity, target_windows

    chars = "abcdefghijklmnopqrstu\n. :12|"  # 28 tokens: inside the test model's vocab of 32
    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="|")
    text = "hdr:\n1. ab\n2. cd"  # header, a train line, the held-out line "cd"
    ((ids, target),) = target_windows([text], tokenizer, seq_len=64)
    assert len(ids) == len(text) + 1  # one token per character, then EOS
    assert [c for c, t in zip(text, target, strict=False) if t] == ["c", "d"]
    assert target[-1] is False  # EOS is not the item
    # the window keeps the document's end: the held-out line with as much history as fits
    ((short, short_target),) = target_windows([text], tokenizer, seq_len=5)
    assert short == ids[-5:] and short_target == target[-5:]
    # a model that always predicts "c" (id 2): the scored tokens are "c" (right) and "d" (wrong)
    z = math.exp(10) + 31
    want = math.exp((-math.log(math.exp(10) / z) - math.log(1 / z)) / 2)
    got = target_perplexity(_model_predicting(2), tokenizer, [text], seq_len=64, batch_size=1)
    assert math.isclose(got, want, rel_tol=1e-5)
