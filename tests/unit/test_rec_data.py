"""cprec_core/rec/data.py: one domain's silver tables as leave-one-out index arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from rec_fixtures import DOMAIN, write_sequences

from cprec_core.artifacts import write_table
from cprec_core.rec.data import DomainDataError, history_mask, left_pad, load_domain
from cprec_core.schema import SILVER_EVENTS


def test_load_domain_indexes_items_and_splits(tmp_path: Path) -> None:
    # items sorted by id -> a:0 b:1 c:2 d:3 e:4 (e has no events but is still rankable)
    write_sequences(tmp_path, {"u1": ["a", "b", "c", "d"], "u0": ["c", "a", "b"]}, ["e", "d", "c", "b", "a"])
    data = load_domain(tmp_path, DOMAIN)
    assert data.item_ids == ["a", "b", "c", "d", "e"]
    assert data.user_ids == ["u0", "u1"]
    # u0: train [c], valid a, test b; u1: train [a, b], valid c, test d
    assert [s.tolist() for s in data.train] == [[2], [0, 1]]
    assert data.valid_target.tolist() == [0, 2]
    assert data.test_target.tolist() == [1, 3]
    # at test time the valid item joins the history
    assert [h.tolist() for h in data.history("test")] == [[2, 0], [0, 1, 2]]
    assert [h.tolist() for h in data.history("valid")] == [[2], [0, 1]]
    assert data.n_train_events == 3
    assert data.texts(lambda t, c: f"{t}|{c}")[0] == "title a|cat"


def test_user_without_valid_event_is_rejected(tmp_path: Path) -> None:
    write_sequences(tmp_path, {"u0": ["a", "b", "c"]}, ["a", "b", "c"])
    bad = pa.table(
        {
            "domain": [DOMAIN] * 3,
            "user_id": ["u0"] * 3,
            "position": [0, 1, 2],
            "item_id": ["a", "b", "c"],
            "ts": [1, 2, 3],
            "split": ["train", "train", "test"],
        }
    )
    write_table(SILVER_EVENTS, tmp_path, bad)
    with pytest.raises(DomainDataError, match=r"user 'u0'.*expected train\.\.\., valid, test"):
        load_domain(tmp_path, DOMAIN)


def test_unknown_item_and_missing_domain_are_named(tmp_path: Path) -> None:
    write_sequences(tmp_path, {"u0": ["a", "b", "z"]}, ["a", "b"])
    with pytest.raises(DomainDataError, match="item_id 'z' is not in silver.items"):
        load_domain(tmp_path, DOMAIN)
    with pytest.raises(DomainDataError, match="no items or events for downstream domain 'Books'"):
        load_domain(tmp_path, "Books")


def test_left_pad_and_history_mask() -> None:
    seqs = [np.array([1, 2, 3, 4]), np.array([5])]
    # keep the last 3, right-aligned, pad 9 on the left
    assert left_pad(seqs, 3, 9).tolist() == [[2, 3, 4], [9, 9, 5]]
    assert history_mask([np.array([0, 2]), np.array([], dtype=np.int64)], 3).tolist() == [
        [True, False, True],
        [False, False, False],
    ]
