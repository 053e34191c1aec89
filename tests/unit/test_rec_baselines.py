"""cprec_core/rec/baselines.py (popularity, SASRec) and cprec_core/rec/zero_shot.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rec_fixtures import DOMAIN, tiny_config, write_sequences, write_silver

from cprec_core.artifacts import read_table
from cprec_core.rec.baselines import popularity_counts, popularity_score_fn
from cprec_core.rec.data import load_domain
from cprec_core.rec.finetune import finetune_variant, run_dir
from cprec_core.rec.ranking import rank_users
from cprec_core.rec.zero_shot import zero_shot_score_fn
from cprec_core.schema import REC_RANKS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: exact, repeatable numbers


def test_popularity_on_a_hand_made_case(tmp_path: Path) -> None:
    # train events: u0 [a, b], u1 [a, c], u2 [b, a] -> counts a=3, b=2, c=1, d=0, e=0
    write_sequences(
        tmp_path,
        {"u0": ["a", "b", "c", "d"], "u1": ["a", "c", "b", "e"], "u2": ["b", "a", "d", "c"]},
        ["a", "b", "c", "d", "e"],
    )
    data = load_domain(tmp_path, DOMAIN)
    assert popularity_counts(data).tolist() == [3, 2, 1, 0, 0]
    score = popularity_score_fn(data)
    # valid (history = train):
    #   u0 seen {a,b}, target c (1): d, e have 0               -> rank 0
    #   u1 seen {a,c}, target b (2)                            -> rank 0
    #   u2 seen {b,a}, target d (0): c (1) beats, e (0) ties   -> rank 2
    assert rank_users(score, data, "valid").tolist() == [0, 0, 2]
    # test (history = train + valid):
    #   u0 seen {a,b,c}, target d (0): e ties                  -> rank 1
    #   u1 seen {a,c,b}, target e (0): d ties                  -> rank 1
    #   u2 seen {b,a,d}, target c (1): e (0) below             -> rank 0
    assert rank_users(score, data, "test").tolist() == [1, 1, 0]


def test_zero_shot_scores_by_cosine_to_the_mean_history_embedding() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    score = zero_shot_score_fn(emb, max_seq_len=2)
    s = score([np.array([0]), np.array([5, 0, 1])[1:]])  # second user: history [0, 1]
    # user 0 = e0: cos with [1,0], [0,1], [1,1]/sqrt2 -> 1, 0, 0.7071
    assert s[0] == pytest.approx([1.0, 0.0, 2**-0.5])
    # user 1 = mean(e0, e1) = [.5, .5] -> normalised [1,1]/sqrt2: cos 0.7071, 0.7071, 1
    assert s[1] == pytest.approx([2**-0.5, 2**-0.5, 1.0])


def test_sasrec_learns_cyclic_sequences_popularity_does_not(tmp_path: Path) -> None:
    write_silver(tmp_path)  # 40 users walking the cycle of 30 items
    cfg = tiny_config(tmp_path, max_epochs=12, patience=12, lr=5e-3)
    sas = finetune_variant(cfg, DOMAIN, "sasrec", 0, None, None, run_dir(cfg, DOMAIN, "sasrec", 0))
    pop = finetune_variant(cfg, DOMAIN, "popularity", 0, None, None, run_dir(cfg, DOMAIN, "popularity", 0))
    # measured: sasrec valid NDCG@10 0.81, 0.97, 0.99, 0.99, 1.0 (epoch 5) ...; test 1.0; popularity 0.14
    assert sas["test"]["NDCG@10"] > 0.9
    assert pop["test"]["NDCG@10"] < 0.3
    assert len(sas["curve"]) == 12 and sas["curve"][-1]["train_loss"] < sas["curve"][0]["train_loss"]
    ranks = read_table(REC_RANKS, Path(sas["out_dir"])).to_pandas()
    assert len(ranks) == 2 * 40 and set(ranks["split"]) == {"valid", "test"}
    assert (Path(sas["out_dir"]) / "model.safetensors").is_file()
    assert not (Path(pop["out_dir"]) / "model.safetensors").exists()
