"""One downstream domain as index arrays: item catalogue, per-user train/valid/test (PAPER.md §5-6).

Reads silver.events and silver.items (cprec_core/schema.py) for one domain; writes nothing.
Items are indexed 0..n_items-1 in item_id order; index n_items is the padding index. Each user
has a train sequence (chronological), one valid target and one test target (leave-one-out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cprec_core.artifacts import parquet_files
from cprec_core.errors import UserError
from cprec_core.schema import SILVER_EVENTS, SILVER_ITEMS


class DomainDataError(UserError, ValueError):
    """silver data of a downstream domain cannot be used for leave-one-out evaluation."""


@dataclass
class DomainData:
    """A domain's catalogue and leave-one-out sequences as item indices."""

    domain: str
    item_ids: list[str]
    titles: list[str]
    categories: list[str | None]
    user_ids: list[str]
    train: list[np.ndarray]  # per user, chronological item indices (length >= 1)
    valid_target: np.ndarray  # int64 [n_users]
    test_target: np.ndarray  # int64 [n_users]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_train_events(self) -> int:
        return int(sum(len(s) for s in self.train))

    def history(self, split: str) -> list[np.ndarray]:
        """The items a user had seen before the `split` target: train (+ valid for test)."""
        if split == "valid":
            return self.train
        if split == "test":
            return [np.append(s, v) for s, v in zip(self.train, self.valid_target, strict=True)]
        raise ValueError(f"split {split!r}: expected 'valid' or 'test'")

    def target(self, split: str) -> np.ndarray:
        return self.valid_target if split == "valid" else self.test_target

    def texts(self, render: Callable[[str, str | None], str]) -> list[str]:
        """Item texts in index order, rendered by `render(title, category)`."""
        return [render(t, c) for t, c in zip(self.titles, self.categories, strict=True)]


def _read_domain(files: list[str], schema: pa.Schema, domain: str) -> pa.Table:
    return pq.read_table(files, schema=schema, filters=[("domain", "=", domain)])


def load_domain(root: Path, domain: str) -> DomainData:
    """Load one domain from silver.events + silver.items under the run root (manifests verified)."""
    items = _read_domain(parquet_files(SILVER_ITEMS, root), SILVER_ITEMS.schema, domain)
    events = _read_domain(parquet_files(SILVER_EVENTS, root), SILVER_EVENTS.schema, domain)
    where = f"{SILVER_EVENTS.path(root)} (domain={domain})"
    if items.num_rows == 0 or events.num_rows == 0:
        raise DomainDataError(
            f"{where}: no items or events for downstream domain {domain!r} (check domains.downstream)"
        )
    items = items.sort_by("item_id")
    item_ids = items["item_id"].to_pylist()
    if len(set(item_ids)) != len(item_ids):
        raise DomainDataError(f"{SILVER_ITEMS.path(root)} (domain={domain}): duplicate item_id")
    index = {iid: i for i, iid in enumerate(item_ids)}
    events = events.sort_by([("user_id", "ascending"), ("position", "ascending")])
    ev_items = events["item_id"].to_pylist()
    unknown = [iid for iid in ev_items if iid not in index]
    if unknown:
        raise DomainDataError(
            f"{where}: item_id {unknown[0]!r} is not in silver.items ({len(unknown)} events)"
        )
    idx = np.fromiter((index[i] for i in ev_items), dtype=np.int64, count=len(ev_items))
    users = events["user_id"].to_numpy(zero_copy_only=False)
    splits = events["split"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    user_ids: list[str] = []
    train: list[np.ndarray] = []
    valid, test = [], []
    for s, e in zip(starts, ends, strict=True):
        sp = splits[s:e]
        n_train = int((sp == "train").sum())
        if e - s < 3 or n_train != e - s - 2 or sp[-2] != "valid" or sp[-1] != "test" or sp[0] != "train":
            raise DomainDataError(
                f"{where}: user {users[s]!r}: splits {list(sp)[-4:]} (last 4): expected train..., valid, test"
            )
        user_ids.append(str(users[s]))
        train.append(idx[s : e - 2])
        valid.append(idx[e - 2])
        test.append(idx[e - 1])
    categories = items["category"].to_pylist()
    titles = pc.fill_null(items["title"], "").to_pylist()
    return DomainData(domain, item_ids, titles, categories, user_ids, train, np.array(valid), np.array(test))


def left_pad(seqs: list[np.ndarray], length: int, pad: int) -> np.ndarray:
    """Last `length` items of each sequence, right-aligned, padded on the left with `pad`."""
    out = np.full((len(seqs), length), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        tail = s[-length:]
        if len(tail):
            out[i, length - len(tail) :] = tail
    return out


def history_mask(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    """bool [n_users, n_items]: True where the user has seen the item (metrics exclude it)."""
    mask = np.zeros((len(histories), n_items), dtype=bool)
    for i, h in enumerate(histories):
        mask[i, h] = True
    return mask
