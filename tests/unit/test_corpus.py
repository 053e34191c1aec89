"""The corpus stage (cprec_core/corpus.py): windowing, mixing, leakage guards, probe, determinism."""

from __future__ import annotations

import itertools
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from cprec_core.artifacts import read_manifest, read_table, write_table
from cprec_core.config import Config, ConfigError, config_from_dict
from cprec_core.corpus import CorpusError, build_corpus, priorities, select_by_chars, window_bounds
from cprec_core.schema import GOLD_CORPUS, GOLD_PROBE, SILVER_EVENTS, SILVER_ITEMS, SILVER_MIXED

PRETRAIN, DOWNSTREAM = ["Books", "Toys"], ["Food"]


def make_config(root: Path, **corpus: Any) -> Config:
    return config_from_dict(
        {
            "paths": {"root": str(root)},
            "domains": {"pretrain": PRETRAIN, "downstream": DOWNSTREAM},
            "corpus": corpus,
        }
    )


def leave_one_out(domain: str, user: str, items: list[str], ts: list[int]) -> list[dict[str, Any]]:
    """silver.events rows of one (user, domain) sequence: last = test, second last = valid."""
    n = len(items)
    split = ["train"] * (n - 2) + ["valid", "test"]
    return [
        {"domain": domain, "user_id": user, "position": p, "item_id": i, "ts": t, "split": s}
        for p, (i, t, s) in enumerate(zip(items, ts, split, strict=True))
    ]


def mixed_from(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """silver.mixed as behaviors defines it: train events of pretrain domains, users in >= 2 of them."""
    train = [e for e in events if e["split"] == "train" and e["domain"] in PRETRAIN]
    rows = []
    for user in sorted({e["user_id"] for e in train}):
        mine = sorted((e for e in train if e["user_id"] == user), key=lambda e: (e["ts"], e["domain"]))
        if len({e["domain"] for e in mine}) >= 2:
            rows += [
                {
                    "user_id": user,
                    "position": p,
                    "domain": e["domain"],
                    "item_id": e["item_id"],
                    "ts": e["ts"],
                }
                for p, e in enumerate(mine)
            ]
    return rows


def write_silver(root: Path, events: list[dict], items: list[dict], mixed: list[dict] | None = None) -> None:
    write_table(SILVER_EVENTS, root, pa.Table.from_pylist(events, schema=SILVER_EVENTS.schema))
    write_table(SILVER_ITEMS, root, pa.Table.from_pylist(items, schema=SILVER_ITEMS.schema))
    rows = mixed_from(events) if mixed is None else mixed
    write_table(SILVER_MIXED, root, pa.Table.from_pylist(rows, schema=SILVER_MIXED.schema))


def item(domain: str, item_id: str, title: str, category: str | None = None) -> dict[str, Any]:
    return {"domain": domain, "item_id": item_id, "title": title, "category": category}


# The hand-made fixture. Item ids and user ids are distinctive strings so that a leak into the text
# would be visible; titles of items that only ever occur as valid/test events start with VALID/TEST.
ITEMS = [
    item("Books", "B1", "Alpha", "Novel"),
    item("Books", "B2", "Beta"),
    item("Books", "B3", "Gamma", "Poetry"),
    item("Books", "B4", "Delta"),
    item("Books", "B5", "VALID Epsilon"),
    item("Books", "B6", "TEST Zeta"),
    item("Toys", "T1", "Kite", "Outdoor"),
    item("Toys", "T2", "Ball"),
    item("Toys", "T3", "VALID Yoyo"),
    item("Toys", "T4", "TEST Top"),
    item("Food", "F1", "Apple"),
    item("Food", "F2", "Bread"),
    item("Food", "F3", "Cheese"),
]
EVENTS = [
    # alice, Books: 4 train (B1..B4 at ts 1, 3, 5, 6), valid B5, test B6
    *leave_one_out("Books", "U_alice_901", ["B1", "B2", "B3", "B4", "B5", "B6"], [1, 3, 5, 6, 7, 8]),
    # alice, Toys: 2 train (T1 at ts 2, T2 at ts 4), valid T3, test T4
    *leave_one_out("Toys", "U_alice_901", ["T1", "T2", "T3", "T4"], [2, 4, 9, 10]),
    # alice, Food (downstream): must never reach the corpus
    *leave_one_out("Food", "U_alice_901", ["F1", "F2", "F3"], [1, 2, 3]),
    # bob, Books only: 1 train (B3), valid B5, test B6 -> no mixed sequence
    *leave_one_out("Books", "U_bob_902", ["B3", "B5", "B6"], [1, 2, 3]),
]


def docs_by_id(root: Path, artifact=GOLD_CORPUS) -> dict[str, dict[str, Any]]:
    return {r["doc_id"]: r for r in read_table(artifact, root).to_pylist()}


def windows(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """The (start, end) windows of one sequence of n items."""
    sequence, number, start, end = window_bounds(np.array([n]), size, overlap)
    assert sequence.tolist() == [0] * len(start) and number.tolist() == list(range(len(start)))
    return list(zip(start.tolist(), end.tolist(), strict=True))


def test_window_bounds_by_hand() -> None:
    # size 20, overlap 5 -> stride 15
    assert windows(0, 20, 5) == []
    assert windows(7, 20, 5) == [(0, 7)]  # shorter than a window: one window
    assert windows(20, 20, 5) == [(0, 20)]
    assert windows(21, 20, 5) == [(0, 20), (15, 21)]  # 1 + ceil(1/15) = 2; tail has 5 shared + 1 new
    assert windows(35, 20, 5) == [(0, 20), (15, 35)]  # 1 + ceil(15/15) = 2, both full
    assert windows(36, 20, 5) == [(0, 20), (15, 35), (30, 36)]  # 1 + ceil(16/15) = 3
    assert windows(6, 3, 0) == [(0, 3), (3, 6)]  # no overlap: a partition
    for n in range(1, 60):
        w = windows(n, 7, 3)
        assert w[0][0] == 0 and w[-1][1] == n  # starts at the head, covers the tail
        assert all(b[0] == a[1] - 3 for a, b in itertools.pairwise(w))  # exactly 3 shared
        assert all(e - s == 7 for s, e in w[:-1]) and 0 < w[-1][1] - w[-1][0] <= 7
    # many sequences at once: each sequence's windows, in order
    sequence, number, start, end = window_bounds(np.array([21, 0, 7]), 20, 5)
    assert sequence.tolist() == [0, 0, 2] and number.tolist() == [0, 1, 0]
    assert list(zip(start.tolist(), end.tolist(), strict=True)) == [(0, 20), (15, 21), (0, 7)]
    with pytest.raises(ValueError, match="overlap 5"):
        window_bounds(np.array([10]), 5, 5)


def test_select_by_chars_closest_total() -> None:
    ids = [f"d{i}" for i in range(100)]
    chars = [10] * 100
    mask = select_by_chars(priorities(0, ids), chars, 254.0)
    assert mask.sum() == 25  # 25 docs = 250 chars is closer to 254 than 26 docs = 260
    assert select_by_chars(priorities(0, ids), chars, 256.0).sum() == 26
    assert select_by_chars(priorities(0, ids), chars, 10_000.0).all()
    assert not select_by_chars(priorities(0, ids), chars, 0.0).any()
    # a larger target keeps a superset: a document's rank depends only on (seed, doc_id)
    assert (select_by_chars(priorities(0, ids), chars, 500.0) >= mask).all()
    assert (select_by_chars(priorities(1, ids), chars, 254.0) != mask).any()


def test_documents_by_hand(tmp_path: Path) -> None:
    write_silver(tmp_path, EVENTS, ITEMS)
    cfg = make_config(tmp_path, max_items=3, window_overlap=1, mix_ratio=0.0)
    stats = build_corpus(cfg, progress=True)
    docs = docs_by_id(tmp_path)
    # alice Books train = 4 items, windows of 3 with 1 shared -> (0,3), (2,4); bob Books: 1 train item
    assert sorted(docs) == [
        "domain:Books:U_alice_901:00000",
        "domain:Books:U_alice_901:00001",
        "domain:Books:U_bob_902:00000",
        "domain:Toys:U_alice_901:00000",
    ]
    assert docs["domain:Books:U_alice_901:00000"]["text"] == (
        "A user's interactions in Books, in time order:\n1. Alpha (Novel)\n2. Beta\n3. Gamma (Poetry)"
    )
    # numbering restarts in every window
    assert docs["domain:Books:U_alice_901:00001"]["text"] == (
        "A user's interactions in Books, in time order:\n1. Gamma (Poetry)\n2. Delta"
    )
    assert docs["domain:Toys:U_alice_901:00000"]["text"] == (
        "A user's interactions in Toys, in time order:\n1. Kite (Outdoor)\n2. Ball"
    )
    assert docs["domain:Books:U_alice_901:00001"]["n_items"] == 2
    assert docs["domain:Toys:U_alice_901:00000"]["domains"] == ["Toys"]
    assert stats["documents"] == {"domain": {"Books": 3, "Toys": 1}, "mixed": 0}
    assert stats["mean_items_per_doc"]["domain"] == (3 + 2 + 1 + 2) / 4
    assert stats["mix_ratio_achieved"] == 0.0
    assert stats["characters_total"] == sum(len(d["text"]) for d in docs.values())
    assert read_manifest(GOLD_CORPUS, tmp_path).extra["documents"] == stats["documents"]


def test_documents_are_written_in_doc_id_order_when_user_order_is_not_it(tmp_path: Path) -> None:
    # renders come in user_id order, which is doc_id order unless a user id has a character below
    # ':' (the separator after it): "U" < "U!" as users, but "domain:Books:U!:..." < "domain:Books:U:..."
    books = ["B1", "B2", "B3", "B5", "B6"]
    events = [row for user in ("U", "U!") for row in leave_one_out("Books", user, books, [1, 2, 3, 4, 5])]
    write_silver(tmp_path, events, ITEMS)
    build_corpus(make_config(tmp_path, max_items=3, window_overlap=1, mix_ratio=0.0))
    ids = read_table(GOLD_CORPUS, tmp_path)["doc_id"].to_pylist()
    assert ids == ["domain:Books:U!:00000", "domain:Books:U:00000"]


def test_mixed_documents_by_hand(tmp_path: Path) -> None:
    write_silver(tmp_path, EVENTS, ITEMS)
    build_corpus(make_config(tmp_path, max_items=3, window_overlap=1, mix_ratio=1.0))
    docs = docs_by_id(tmp_path)
    # alice's train events by ts: B1(1) T1(2) B2(3) T2(4) B3(5) B4(6): 6 items -> (0,3), (2,5), (4,6)
    assert sorted(docs) == ["mixed:U_alice_901:00000", "mixed:U_alice_901:00001", "mixed:U_alice_901:00002"]
    assert docs["mixed:U_alice_901:00000"]["text"] == (
        "A user's interactions across domains, in time order:\n"
        "1. [Books] Alpha (Novel)\n2. [Toys] Kite (Outdoor)\n3. [Books] Beta"
    )
    assert docs["mixed:U_alice_901:00001"]["domains"] == ["Books", "Toys"]
    assert docs["mixed:U_alice_901:00002"]["text"].endswith("\n1. [Books] Gamma (Poetry)\n2. [Books] Delta")
    assert docs["mixed:U_alice_901:00002"]["domains"] == ["Books"]
    assert {d["kind"] for d in docs.values()} == {"mixed"}


def test_no_leakage_and_probe(tmp_path: Path) -> None:
    write_silver(tmp_path, EVENTS, ITEMS)
    build_corpus(make_config(tmp_path, max_items=3, window_overlap=1, mix_ratio=0.5))
    docs = docs_by_id(tmp_path)
    text = "\n".join(d["text"] for d in docs.values())
    for forbidden in ("VALID", "TEST", "Apple", "Bread", "Cheese", "Food", "U_alice", "U_bob", "B1", "T1"):
        assert forbidden not in text
    assert all(set(d["domains"]) <= set(PRETRAIN) for d in docs.values())
    probe = docs_by_id(tmp_path, GOLD_PROBE)
    # one per (user, pretrain domain) with a valid event: alice Books, alice Toys, bob Books
    assert sorted(probe) == ["probe:Books:U_alice_901", "probe:Books:U_bob_902", "probe:Toys:U_alice_901"]
    # the last max_items - 1 = 2 train items (B3 B4) then the valid item: 3 items, like a window
    assert probe["probe:Books:U_alice_901"]["text"] == (
        "A user's interactions in Books, in time order:\n1. Gamma (Poetry)\n2. Delta\n3. VALID Epsilon"
    )
    assert probe["probe:Books:U_alice_901"]["n_items"] == 3
    assert probe["probe:Books:U_bob_902"]["text"].endswith("\n1. Gamma (Poetry)\n2. VALID Epsilon")
    assert all(p["text"].splitlines()[-1].split(". ", 1)[1].startswith("VALID") for p in probe.values())
    assert not set(probe) & set(docs)


def test_probe_cap(tmp_path: Path) -> None:
    write_silver(tmp_path, EVENTS, ITEMS)
    stats = build_corpus(make_config(tmp_path, max_items=3, window_overlap=1, probe_docs=2))
    assert stats["probe_documents"] == 2 and read_table(GOLD_PROBE, tmp_path).num_rows == 2


def synthetic(n_users: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Random sequences over 3 domains (Food downstream); each user in 1-3 domains."""
    rng = random.Random(seed)
    domains = [*PRETRAIN, *DOWNSTREAM]
    items = [
        item(d, f"{d}{i}", f"{d} title {i} " + "x" * rng.randint(0, 30), rng.choice([None, "Cat"]))
        for d in domains
        for i in range(40)
    ]
    events = []
    for u in range(n_users):
        for d in rng.sample(domains, rng.randint(1, 3)):
            n = rng.randint(3, 30)
            ts = sorted(rng.sample(range(10_000), n))
            events += leave_one_out(d, f"user{u}", [f"{d}{rng.randrange(40)}" for _ in range(n)], ts)
    return events, items


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_silver(root, *synthetic(300, seed=1))
    return root


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_mix_ratio_achieved(synth_root: Path, ratio: float) -> None:
    stats = build_corpus(make_config(synth_root, max_items=8, window_overlap=2, mix_ratio=ratio))
    assert abs(stats["mix_ratio_achieved"] - ratio) < 0.01
    assert stats["mix_ratio_requested"] == ratio
    kept, avail = stats["documents"], stats["documents_available"]
    # only one kind is subsampled: the over-represented one; nothing is duplicated
    assert kept["mixed"] == avail["mixed"] or kept["domain"] == avail["domain"]
    assert kept["mixed"] <= avail["mixed"]
    docs = read_table(GOLD_CORPUS, synth_root)
    assert docs.num_rows == stats["documents_total"] == len(set(docs["doc_id"].to_pylist()))
    extra = read_manifest(GOLD_CORPUS, synth_root).extra
    assert extra["mix_ratio_achieved"] == stats["mix_ratio_achieved"]


def test_domain_weights(synth_root: Path) -> None:
    cfg = make_config(
        synth_root, max_items=8, window_overlap=2, mix_ratio=0.0, domain_weights={"Books": 1.0, "Toys": 3.0}
    )
    stats = build_corpus(cfg)
    assert abs(stats["domain_char_share"]["Toys"] - 0.75) < 0.01
    # Toys is the binding domain (share 3/4 of what it has): all of its documents are kept
    assert stats["documents"]["domain"]["Toys"] == stats["documents_available"]["domain"]["Toys"]
    with pytest.raises(ConfigError, match=r"unknown \['Food'\], missing \['Toys'\]"):
        build_corpus(make_config(synth_root, domain_weights={"Books": 1.0, "Food": 1.0}))


def test_deterministic(synth_root: Path, tmp_path: Path) -> None:
    cfg = make_config(synth_root, max_items=8, window_overlap=2, mix_ratio=0.3)
    first = build_corpus(cfg)
    files = sorted((synth_root / "gold" / "corpus").rglob("*.parquet"))
    blobs = [f.read_bytes() for f in files]
    second = build_corpus(cfg)
    assert second["corpus_fingerprint"] == first["corpus_fingerprint"]
    assert second["probe_fingerprint"] == first["probe_fingerprint"]
    assert [f.read_bytes() for f in files] == blobs
    ids = read_table(GOLD_CORPUS, synth_root)["doc_id"].to_pylist()
    assert ids == sorted(ids)
    other = build_corpus(make_config(synth_root, max_items=8, window_overlap=2, mix_ratio=0.3, seed=7))
    assert other["corpus_fingerprint"] != first["corpus_fingerprint"]


def test_missing_kind_is_warned_or_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_silver(tmp_path, EVENTS, ITEMS, mixed=[])
    with caplog.at_level(logging.WARNING, logger="cprec_core.corpus"):
        stats = build_corpus(make_config(tmp_path, mix_ratio=0.5))
    assert stats["mix_ratio_achieved"] == 0.0 and stats["documents_total"] == 3
    assert "silver.mixed yields none" in stats["warnings"][0]
    assert "silver.mixed yields none" in caplog.text
    with pytest.raises(CorpusError, match=r"corpus would be empty: corpus\.mix_ratio=1\.0"):
        build_corpus(make_config(tmp_path, mix_ratio=1.0))


def test_contract_violations_are_refused(tmp_path: Path) -> None:
    # a valid event in silver.mixed: the leakage guard names it
    mixed = mixed_from(EVENTS)
    mixed[0] = {**mixed[0], "item_id": "B5", "ts": 7}
    write_silver(tmp_path, EVENTS, ITEMS, mixed=mixed)
    with pytest.raises(
        CorpusError, match=r"silver.mixed user_id='U_alice_901' position=0: .*not a train event"
    ):
        build_corpus(make_config(tmp_path))
    # a downstream domain in silver.mixed
    write_silver(tmp_path, EVENTS, ITEMS, mixed=[{**mixed[1], "domain": "Food"}])
    with pytest.raises(CorpusError, match=r"domains \['Food'\] that are not in domains.pretrain"):
        build_corpus(make_config(tmp_path))
    # an event whose item has no text
    write_silver(tmp_path, EVENTS, [i for i in ITEMS if i["item_id"] != "B4"])
    with pytest.raises(CorpusError, match=r"domain=Books user_id='U_alice_901' position=3: item_id 'B4'"):
        build_corpus(make_config(tmp_path))


def test_render_chunks_do_not_change_the_corpus(synth_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(synth_root, max_items=8, window_overlap=2, mix_ratio=0.4)
    whole = build_corpus(cfg)
    # 7 item lines per batch: users are never split, a user with more lines gets a batch alone
    monkeypatch.setattr("cprec_core.corpus.RENDER_CHUNK_LINES", 7)
    shutil.rmtree(synth_root / "cache" / "corpus")  # render every domain again, not from the cache
    assert build_corpus(cfg)["corpus_fingerprint"] == whole["corpus_fingerprint"]


def test_pretrain_domain_without_events_is_warned(tmp_path: Path) -> None:
    write_silver(tmp_path, EVENTS, ITEMS)
    cfg = config_from_dict(
        {"paths": {"root": str(tmp_path)}, "domains": {"pretrain": [*PRETRAIN, "Home"], "downstream": []}}
    )
    stats = build_corpus(cfg)
    assert stats["warnings"] == ["domains.pretrain: Home has no train events in silver.events"]
    assert stats["documents_available"]["domain"] == {"Books": 2, "Home": 0, "Toys": 1}


def _lines_by_group(root: Path) -> dict[str, list[list[str]]]:
    from cprec_core.prompts import split_document

    groups: dict[str, list[list[str]]] = {}
    for doc_id, row in sorted(docs_by_id(root).items()):
        header, lines = split_document(row["text"])
        groups.setdefault(doc_id.rsplit(":", 2)[0], []).append([header, *lines])
    return groups


def test_shuffled_control_keeps_every_line_and_document_shape_but_not_the_order(tmp_path: Path) -> None:
    events, items = synthetic(300, seed=1)
    for name in ("plain", "shuffled"):
        write_silver(tmp_path / name, events, items)
    kw = {"max_items": 8, "window_overlap": 2, "mix_ratio": 0.3}
    plain = build_corpus(make_config(tmp_path / "plain", **kw))
    shuffled = build_corpus(make_config(tmp_path / "shuffled", shuffle_lines=True, **kw))
    a, b = _lines_by_group(tmp_path / "plain"), _lines_by_group(tmp_path / "shuffled")
    assert a.keys() == b.keys() == {"domain:Books", "domain:Toys", "mixed"}
    for group in a:
        # the same documents, each with its header and number of lines ...
        assert [(d[0], len(d)) for d in a[group]] == [(d[0], len(d)) for d in b[group]]
        # ... the same multiset of item lines in the group ...
        assert sorted(x for d in a[group] for x in d[1:]) == sorted(x for d in b[group] for x in d[1:])
        # ... dealt out again: most documents now hold other lines
        changed = sum(x[1:] != y[1:] for x, y in zip(a[group], b[group], strict=True))
        assert changed > 0.8 * len(a[group]), (group, changed, len(a[group]))
    assert plain["characters_total"] == shuffled["characters_total"]
    assert plain["probe_fingerprint"] == shuffled["probe_fingerprint"]  # the probe is never shuffled
    mixed = [r for r in read_table(GOLD_CORPUS, tmp_path / "shuffled").to_pylist() if r["kind"] == "mixed"]
    for row in mixed:  # a mixed document's domains are those of the lines it holds now
        tags = {line.split(". [", 1)[1].split("]")[0] for line in row["text"].split("\n")[1:]}
        assert row["domains"] == sorted(tags)


def test_a_downstream_catalogue_read_in_cpt_is_refused(tmp_path: Path) -> None:
    # Food's three titles; two of them ("Apple", "bread!") also name Books items -> 2/3 shared
    items = [*ITEMS, item("Books", "B7", "apple"), item("Books", "B8", "BREAD")]
    write_silver(tmp_path, EVENTS, items)
    with pytest.raises(CorpusError, match=r"Food: 2 of its 3 item titles \(66.7%\) also name items"):
        build_corpus(make_config(tmp_path))
    stats = build_corpus(make_config(tmp_path, max_downstream_overlap=0.7))
    assert stats["catalogue_overlap"]["Food"] == {"items": 3, "titles_in_pretrain": 2, "share": 2 / 3}


def test_a_changed_domain_is_rendered_again_and_the_others_come_from_the_render_cache(tmp_path: Path) -> None:
    events, items = synthetic(300, seed=1)
    write_silver(tmp_path / "run", events, items)
    kw = {"max_items": 8, "window_overlap": 2, "mix_ratio": 0.3}
    build_corpus(make_config(tmp_path / "run", **kw))
    cache = tmp_path / "run" / "cache" / "corpus"
    books = next((cache / "Books").iterdir()) / "docs.parquet"
    toys = next((cache / "Toys").iterdir())
    books_inode = books.stat().st_ino

    # a refresh changed Toys only: two users' Toys events are gone
    gone = {"user3", "user4"}
    changed = [e for e in events if not (e["domain"] == "Toys" and e["user_id"] in gone)]
    write_silver(tmp_path / "run", changed, items)
    again = build_corpus(make_config(tmp_path / "run", **kw))
    write_silver(tmp_path / "fresh", changed, items)
    fresh = build_corpus(make_config(tmp_path / "fresh", **kw))

    assert again["corpus_fingerprint"] == fresh["corpus_fingerprint"]
    assert again["probe_fingerprint"] == fresh["probe_fingerprint"]
    assert books.stat().st_ino == books_inode  # Books: the cached render, untouched
    assert [p.name for p in (cache / "Toys").iterdir()] != [toys.name]  # Toys: rendered again
    assert len(list((cache / "Toys").iterdir())) == 1  # ... and its stale entry removed
    # a rendering setting is part of the key: max_items=6 renders every domain again
    six = build_corpus(make_config(tmp_path / "run", **{**kw, "max_items": 6}))
    assert not books.exists() and six["corpus_fingerprint"] != again["corpus_fingerprint"]


def test_new_downstream_logs_keep_the_corpus_as_it_is_and_the_catalogue_guard_runs(tmp_path: Path) -> None:
    events, items = synthetic(300, seed=1)
    kw = {"max_items": 8, "window_overlap": 2, "mix_ratio": 0.3}
    write_silver(tmp_path / "run", events, items)
    first = build_corpus(make_config(tmp_path / "run", **kw))
    files = sorted(GOLD_CORPUS.path(tmp_path / "run").rglob("*.parquet"))
    inodes = [p.stat().st_ino for p in files]

    # new Food (downstream) logs: half its users' events go, and a new item's title names a Books item
    changed = [e for e in events if not (e["domain"] == "Food" and int(e["user_id"][4:]) % 2)]
    grown = [*items, item("Food", "Food40", next(i["title"] for i in items if i["item_id"] == "Books0"))]
    write_silver(tmp_path / "run", changed, grown)
    again = build_corpus(make_config(tmp_path / "run", **kw))
    write_silver(tmp_path / "fresh", changed, grown)
    fresh = build_corpus(make_config(tmp_path / "fresh", **kw))

    assert [p.stat().st_ino for p in files] == inodes  # the files were not written again
    assert again["corpus_fingerprint"] == first["corpus_fingerprint"] == fresh["corpus_fingerprint"]
    assert again == fresh  # the statistics a full build reports, the new catalogue overlap included
    assert again["catalogue_overlap"]["Food"] == {"items": 41, "titles_in_pretrain": 1, "share": 1 / 41}
    stored = read_manifest(GOLD_CORPUS, tmp_path / "run").extra
    assert stored["catalogue_overlap"] == again["catalogue_overlap"]

    # the guard still runs on a kept corpus: Food now names Books' catalogue
    books_titles = [i["title"] for i in items if i["domain"] == "Books"][1:11]
    leaky = [*grown, *(item("Food", f"Leak{n}", title) for n, title in enumerate(books_titles))]
    write_silver(tmp_path / "run", changed, leaky)
    with pytest.raises(CorpusError, match="downstream domain Food"):
        build_corpus(make_config(tmp_path / "run", **kw))

    # a pretrain change, or a corpus setting, builds it again
    def fingerprint(**corpus: Any) -> str:
        return build_corpus(make_config(tmp_path / "run", **corpus))["corpus_fingerprint"]

    write_silver(tmp_path / "run", [e for e in changed if e["user_id"] != "user1"], grown)
    assert fingerprint(**kw) != first["corpus_fingerprint"]
    write_silver(tmp_path / "run", changed, grown)
    assert fingerprint(**kw) == first["corpus_fingerprint"]
    assert fingerprint(**{**kw, "mix_ratio": 0.4}) != first["corpus_fingerprint"]
