"""cprec_core/export.py and the raw-order tie-break: a RecBole user gets exactly our split.

The fixture has many same-second events, in a raw file whose order differs from item_id order:
leave-one-out must follow the file (RecBole's stable sort), and the exported files, sorted by time
again as RecBole would, must give back our valid and test targets.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from behaviors_fixtures import Event, build

from cprec_core.export import ExportError, export_recbole
from cprec_core.metrics import full_ranks, mean_metrics
from cprec_core.rec.baselines import popularity_score_fn
from cprec_core.rec.data import load_domain
from cprec_core.rec.ranking import rank_users


def tied_events(seed: int = 3) -> list[Event]:
    """60 users x 6-12 events over 25 items, timestamps drawn from only 4 seconds: ties everywhere."""
    rng = random.Random(seed)
    return [
        ("A", f"u{u:02d}", f"i{rng.randrange(25):02d}", rng.choice([10, 20, 30, 40]))
        for u in range(60)
        for _ in range(rng.randint(6, 12))
    ]


def stable_split(events: list[Event]) -> dict[str, list[str]]:
    """Each user's items in time order, ties in file order (a stable sort), duplicates dropped."""
    by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
    seen = set()
    for d, u, i, t in events:
        if (d, u, i, t) not in seen:
            seen.add((d, u, i, t))
            by_user[u].append((t, i))
    return {u: [i for _, i in sorted(seq, key=lambda e: e[0])] for u, seq in by_user.items()}


def read_inter(path: Path) -> dict[str, list[str]]:
    """A RecBole .inter file read as RecBole does with order TO: rows grouped by user, each user's
    rows stably sorted by the float timestamp."""
    header, *rows = path.read_text().splitlines()
    assert header.split("\t") == ["user_id:token", "item_id:token", "timestamp:float"]
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for row in rows:
        u, i, t = row.split("\t")
        by_user[u].append((float(t), i))
    return {u: [i for _, i in sorted(seq, key=lambda e: e[0])] for u, seq in by_user.items()}


def test_source_order_leave_one_out_matches_a_stable_sort_and_popularity(tmp_path: Path) -> None:
    events = tied_events()
    build(tmp_path, events, downstream=("A",), pretrain=())
    data = load_domain(tmp_path, "A")
    want = stable_split(events)
    assert data.user_ids == sorted(want)
    idx = {item: n for n, item in enumerate(data.item_ids)}
    for u, train, valid, test in zip(
        data.user_ids, data.train, data.valid_target, data.test_target, strict=True
    ):
        assert [idx[i] for i in want[u]] == [*train.tolist(), valid, test], u
    # popularity by hand from the stable split: counts over train items, test ranked with train +
    # valid masked, ties against the target
    counts = np.zeros(len(idx))
    for seq in want.values():
        for i in seq[:-2]:
            counts[idx[i]] += 1
    targets = np.array([idx[want[u][-1]] for u in data.user_ids])
    history = np.zeros((len(targets), len(idx)), dtype=bool)
    for row, u in enumerate(data.user_ids):
        history[row, [idx[i] for i in want[u][:-1]]] = True
    by_hand = mean_metrics(full_ranks(np.tile(counts, (len(targets), 1)), targets, history), [10])
    ours = mean_metrics(rank_users(popularity_score_fn(data), data, "test"), [10])
    assert ours == by_hand


def test_the_other_tie_break_changes_the_split(tmp_path: Path) -> None:
    events = tied_events()
    build(tmp_path / "a", events, downstream=("A",), pretrain=())
    build(tmp_path / "b", events, downstream=("A",), pretrain=(), tie_break="item_id")
    a, b = load_domain(tmp_path / "a", "A"), load_domain(tmp_path / "b", "A")
    changed = int((a.test_target != b.test_target).sum())
    assert changed > 10  # with 4 distinct seconds, most users' last events tie


def test_export_round_trip_gives_recbole_our_targets(tmp_path: Path) -> None:
    build(tmp_path, tied_events(), downstream=("A",), pretrain=())
    out = export_recbole(tmp_path, "A", tmp_path / "recbole")
    folder = Path(out["dir"])
    assert folder == tmp_path / "recbole" / "A"
    read = read_inter(folder / "A.inter")
    data = load_domain(tmp_path, "A")
    for u, train, valid, test in zip(
        data.user_ids, data.train, data.valid_target, data.test_target, strict=True
    ):
        seq = [data.item_ids[i] for i in [*train.tolist(), valid, test]]
        assert read[u] == seq, u  # RecBole's LS split: last = test, second last = valid
    items = (folder / "A.item").read_text().splitlines()
    assert (
        items[0] == "item_id:token\ttitle:token_seq\tcategories:token_seq" and len(items) == data.n_items + 1
    )
    settings = (folder / "recbole.yaml").read_text()
    assert "split: {LS: valid_and_test}, order: TO" in settings and "dataset: A" in settings
    assert out["interactions"] == sum(len(s) + 2 for s in data.train)
    with pytest.raises(ExportError, match="no events of domain 'B'"):
        export_recbole(tmp_path, "B", tmp_path / "recbole")
