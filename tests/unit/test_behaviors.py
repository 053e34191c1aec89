"""cprec_core/behaviors.py and sql/*.sql: bronze → silver items, events, mixed, stats.

Each test writes a tiny hand-made bronze with `write_table` and runs the real stage. Expected
values are worked out by hand in the comments.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict

import pytest
from behaviors_fixtures import Event, Item, build, config, events_of, lines, rows

from cprec_core.artifacts import read_manifest, read_table
from cprec_core.behaviors import BehaviorsError, behaviors_config_hash
from cprec_core.schema import SILVER_EVENTS, SILVER_ITEMS, SILVER_MIXED, SILVER_STATS


def test_dedupe_collapses_exact_duplicates_and_keeps_repeat_purchases(tmp_path):
    # u1 in A: (i1,10) twice = one event logged twice; i1 again at ts 30 = a repeat purchase.
    # bronze 5 events -> dedup 4: i1@10, i2@20, i1@30, i3@40 -> positions 0..3,
    # split train, train, valid (second last), test (last).
    # Domain Z is in bronze but not configured: it is ignored.
    events = [("A", "u1", "i1", 10), ("A", "u1", "i1", 10), ("A", "u1", "i2", 20)]
    events += [("A", "u1", "i1", 30), ("A", "u1", "i3", 40)]
    events += [("Z", "u1", f"z{n}", n) for n in range(4)]
    result = build(tmp_path, events)
    assert events_of(tmp_path) == [
        ("A", "u1", 0, "i1", 10, "train"),
        ("A", "u1", 1, "i2", 20, "train"),
        ("A", "u1", 2, "i1", 30, "valid"),
        ("A", "u1", 3, "i3", 40, "test"),
    ]
    assert set(result["counts"]) == {"A"}
    a = result["counts"]["A"]
    assert a["bronze"] == {"n_users": 1, "n_items": 3, "n_events": 5}
    assert a["dedup"] == {"n_users": 1, "n_items": 3, "n_events": 4}


# --- 15_int_user_keys, 20_int_events (sample) ---------------------------------------------------------


def test_user_sample_keeps_whole_users_of_the_listed_domain_only(tmp_path):
    # 400 users with 3 events in A and 3 in B; keep a quarter of A's users, all of B's
    events = [(d, f"u{u}", f"{d}{u % 7}-{n}", n) for u in range(400) for d in ("A", "B") for n in range(3)]
    quarter = build(tmp_path / "q", events, pretrain=("A", "B"), user_fraction={"A": 0.25})
    half = build(tmp_path / "h", events, pretrain=("A", "B"), user_fraction={"A": 0.5})
    q, h = quarter["counts"]["A"], half["counts"]["A"]
    # binomial(400, 0.25): mean 100, sd 8.7; the bounds are 4.6 sd wide on each side
    assert 60 <= q["sample"]["n_users"] <= 140 and 160 <= h["sample"]["n_users"] <= 240
    assert q["sample"]["n_events"] == 3 * q["sample"]["n_users"]  # a kept user keeps every event
    assert quarter["counts"]["B"]["sample"] == quarter["counts"]["B"]["dedup"]  # B is not sampled
    kept_q = {e[1] for e in events_of(tmp_path / "q") if e[0] == "A"}
    kept_h = {e[1] for e in events_of(tmp_path / "h") if e[0] == "A"}
    assert kept_q < kept_h  # a function of the user id: the smaller sample nests in the larger
    build(tmp_path / "q2", events, pretrain=("A", "B"), user_fraction={"A": 0.25})
    assert {e[1] for e in events_of(tmp_path / "q2") if e[0] == "A"} == kept_q


def test_user_fraction_must_be_a_share(tmp_path):
    with pytest.raises(ValueError, match="user_fraction of A: 1.5 must be in"):
        config(tmp_path, ("A",), user_fraction={"A": 1.5})


# --- 11_stg_items, 20_int_events (text) -------------------------------------------------------------


def test_items_most_complete_record_wins_and_events_without_text_are_dropped_and_counted(tmp_path):
    # min_title_chars = 3 (default). Items of A (completeness = 4 usable title + 2 category + 1 description):
    #   i1 "  Ab  "  -> trimmed "Ab" (2 chars)                          -> no text
    #   i2 None                                                         -> no text
    #   i3 " Good book " -> "Good book", leaf "Mystery"                -> text
    #   i4 "Lamp" [Home] (6) then "Desk Lamp" [] (4): the more complete -> "Lamp", category Home
    #   i5 no item record at all                                        -> no text
    #   i6 "Chair" [Home] (6) then "" [Home] (2): a worse later record  -> "Chair" stays
    #   i7 "Old shelf" [Home] then "New shelf" [Home]: equally complete -> the later, "New shelf"
    # u1 events i1@1 i2@2 i3@3 i4@4 i5@5 i3@6 i4@7 i6@8 i7@9: 9 after dedup, 6 with text
    # (i3@3, i4@4, i3@6, i4@7, i6@8, i7@9) -> dropped_without_text A = 9 - 6 = 3.
    events = [("A", "u1", f"i{n}", n) for n in (1, 2, 3, 4, 5)]
    events += [("A", "u1", "i3", 6), ("A", "u1", "i4", 7), ("A", "u1", "i6", 8), ("A", "u1", "i7", 9)]
    items: list[Item] = [
        ("A", "i1", "  Ab  ", ["X"]),
        ("A", "i2", None, ["X"]),
        ("A", "i3", " Good book ", ["Books", "Fiction", " Mystery "]),
        ("A", "i4", "Lamp", ["Home"]),
        ("A", "i6", "Chair", ["Home"]),
        ("A", "i7", "Old shelf", ["Home"]),
        ("A", "i4", "Desk Lamp", []),
        ("A", "i6", "", ["Home"]),
        ("A", "i7", "New shelf", ["Home"]),
    ]
    result = build(tmp_path, events, items)
    assert result["dropped_without_text"] == {"A": 3}
    assert result["duplicate_item_records"] == {"A": {"n_items_with_duplicates": 3, "n_records_set_aside": 3}}
    # plain ints (a DuckDB sum is a HUGEINT: it reached the summary JSON as the string "3")
    assert {type(v) for v in result["duplicate_item_records"]["A"].values()} == {int}
    assert rows(SILVER_ITEMS, tmp_path) == [
        ("A", "i3", "Good book", "Mystery"),
        ("A", "i4", "Lamp", "Home"),
        ("A", "i6", "Chair", "Home"),
        ("A", "i7", "New shelf", "Home"),
    ]
    assert [(e[3], e[4], e[5]) for e in events_of(tmp_path)] == [
        ("i3", 3, "train"),
        ("i4", 4, "train"),
        ("i3", 6, "train"),
        ("i4", 7, "train"),
        ("i6", 8, "valid"),
        ("i7", 9, "test"),
    ]
    stats = {(d, s): (nu, ni, ne) for d, s, nu, ni, ne in rows(SILVER_STATS, tmp_path)}
    assert stats[("A", "text")] == (1, 4, 6)
    manifest = read_manifest(SILVER_STATS, tmp_path)
    assert manifest.extra["dropped_without_text"] == {"A": 3}
    assert manifest.extra["duplicate_item_records"]["A"]["n_items_with_duplicates"] == 3


def test_a_domain_emptied_by_a_step_fails_naming_the_step_and_the_field_to_map(tmp_path):
    # Downstream D's items have no title: their source called it "name" (bronze keeps it in extra).
    events = [("A", "u1", f"a{n}", n) for n in range(3)] + [("D", "u1", f"d{n}", n) for n in range(3)]
    items: list[Item] = [("A", f"a{n}", f"Title a{n}", ["X"]) for n in range(3)]
    items += [("D", f"d{n}", None, ["Y"]) for n in range(3)]
    extras = {f"d{n}": '{"name": "A thing", "genre": "Y"}' for n in range(3)}
    with pytest.raises(
        BehaviorsError,
        match=r"domains.downstream: domain D: the text step left 0 events of 0 users .*3 items, 0 with text "
        r"\(no title field; fields present: genre, name; map one with ingest.sources\[\].fields.title\)",
    ):
        build(tmp_path, events, items, downstream=("D",), extras=extras)


# --- 40_int_kcore, 41_int_kcore_step --------------------------------------------------------------


def test_kcore_is_iterative_where_one_pass_is_not_enough(tmp_path):
    # k = 3. Core: u1, u2, u3 x items a, b, c (9 events; every user and item has 3).
    # Pendant: item d bought by u1, u2, u4; u4 also bought a.
    #   counts before: u1 4, u2 4, u3 3, u4 2 | a 4, b 3, c 3, d 3
    #   pass 1 removes u4 (2 < 3): u4-d, u4-a go; now d has 2, a has 3
    #   pass 2 removes d (2 < 3): u1-d, u2-d go; now u1, u2 have 3 each
    #   pass 3 removes nothing -> 2 removal passes, 9 events left (the core).
    # A naive one-pass filter on the first counts would only drop u4 and keep 11 events.
    core = [("A", u, i, t) for t, (u, i) in enumerate(itertools.product(["u1", "u2", "u3"], "abc"))]
    pendant = [("A", "u1", "d", 20), ("A", "u2", "d", 21), ("A", "u4", "d", 22), ("A", "u4", "a", 23)]
    events = core + pendant
    users = Counter(e[1] for e in events)
    items = Counter(e[2] for e in events)
    one_pass = [e for e in events if users[e[1]] >= 3 and items[e[2]] >= 3]
    assert len(one_pass) == 11  # the fixture does tell iterative from one-pass

    result = build(tmp_path, events, k_core=3)
    assert result["kcore_iterations"] == 2
    assert result["counts"]["A"]["kcore"] == {"n_users": 3, "n_items": 3, "n_events": 9}
    assert sorted((e[1], e[3]) for e in events_of(tmp_path)) == sorted((e[1], e[2]) for e in core)
    assert read_manifest(SILVER_EVENTS, tmp_path).extra["kcore_iterations"] == 2


def reference_kcore(events: list[Event], k: int) -> tuple[set[Event], int]:
    """The k-core by its definition: recount every user and item of each domain per pass."""
    left, passes = set(events), 0
    while True:
        users = Counter((d, u) for d, u, _, _ in left)
        items = Counter((d, i) for d, _, i, _ in left)
        kept = {e for e in left if users[e[0], e[1]] >= k and items[e[0], e[2]] >= k}
        if kept == left:
            return left, passes
        left, passes = kept, passes + 1


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_kcore_equals_a_full_recount_per_pass_on_random_logs(tmp_path, seed):
    # later passes count only what the pass before deleted (42, 43): on sparse random logs of two
    # domains, where removals cascade over several passes, the result is the definition's
    rng = random.Random(seed)
    users = [f"u{int(rng.paretovariate(1.2)) % 60}" for _ in range(600)]  # a few heavy users
    logged = zip("AB" * 300, users, strict=True)
    events = sorted({(d, u, f"{d}{rng.randrange(60)}", rng.randrange(50)) for d, u in logged})
    core, passes = reference_kcore(events, 5)
    assert passes >= 4 and core  # the logs do cascade, and leave a core
    result = build(tmp_path, events, pretrain=("A", "B"), k_core=5, min_sequence_len=3)
    assert result["kcore_iterations"] == passes
    for domain in "AB":
        mine = [e for e in core if e[0] == domain]
        assert result["counts"][domain]["kcore"] == {
            "n_users": len({e[1] for e in mine}),
            "n_items": len({e[2] for e in mine}),
            "n_events": len(mine),
        }
    assert sorted((e[0], e[1], e[3], e[4]) for e in events_of(tmp_path)) == sorted(
        (d, u, i, t) for d, u, i, t in core
    )


# --- 50_fct_events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tie_break", "order"),
    [("source_order", ["c", "b", "a", "d"]), ("item_id", ["c", "a", "b", "d"])],
)
def test_sequences_are_chronological_with_the_tie_break_rule_and_leave_one_out(tmp_path, tie_break, order):
    # u1's file lines: b@100, a@100, c@50, d@200. In time: c first, d last; b and a share ts 100:
    #   source_order keeps the file's order (b, line 1, before a, line 2): c, b, a, d;
    #   item_id puts a before b:                                              c, a, b, d.
    # Either way: positions 0, 1 train, 2 valid, 3 test.
    # u2: 2 events < min_sequence_len 3 -> dropped from A (but counted at the kcore step).
    events = [("A", "u1", "b", 100), ("A", "u1", "a", 100), ("A", "u1", "c", 50), ("A", "u1", "d", 200)]
    events += [("A", "u2", "a", 1), ("A", "u2", "b", 2)]
    result = build(tmp_path, events, tie_break=tie_break)
    ts = {"a": 100, "b": 100, "c": 50, "d": 200}
    splits = ["train", "train", "valid", "test"]
    assert events_of(tmp_path) == [("A", "u1", p, i, ts[i], splits[p]) for p, i in enumerate(order)]
    assert result["counts"]["A"]["kcore"]["n_users"] == 2
    assert result["counts"]["A"]["sequences"] == {"n_users": 1, "n_items": 4, "n_events": 4}
    # the catalogue holds exactly the items of the final sequences
    assert [r[1] for r in rows(SILVER_ITEMS, tmp_path)] == ["a", "b", "c", "d"]


def test_a_duplicate_event_keeps_its_first_line(tmp_path):
    # x@5 is logged on lines 1 and 4; y@5 on line 2: the duplicate's first line (1) puts x before y
    events = [("A", "u1", "x", 5), ("A", "u1", "y", 5), ("A", "u1", "z", 9), ("A", "u1", "x", 5)]
    build(tmp_path, events)
    assert [e[3] for e in events_of(tmp_path)] == ["x", "y", "z"]


# --- 60_fct_mixed -----------------------------------------------------------------------------------

# pretrain A, B; downstream C.
# u1: A a1@10 a2@20 | a3@30 valid, a4@40 test;  B b1@15 b2@20 | b3@25 valid, b4@50 test;
#     C c1@5 c2@6 c3@7 (downstream: never mixed).
#     mixed = train events by ts, ties by domain: a1@10, b1@15, a2@20 (A < B), b2@20.
# u2: A and C only -> one pretrain domain -> no mixed sequence.
# u3: A a1@100 (pos 0), a2@100 (pos 1), a3@200, then a4@300 valid, a5@400 test;
#     B b1@100 train, b2@300 valid, b3@400 test.
#     mixed: ts 100 ties -> (A, pos 0) a1, (A, pos 1) a2, (B) b1; then a3@200.
MIXED_EVENTS: list[Event] = (
    [("A", "u1", f"a{n}", t) for n, t in zip((1, 2, 3, 4), (10, 20, 30, 40), strict=True)]
    + [("B", "u1", f"b{n}", t) for n, t in zip((1, 2, 3, 4), (15, 20, 25, 50), strict=True)]
    + [("C", "u1", f"c{n}", t) for n, t in zip((1, 2, 3), (5, 6, 7), strict=True)]
    + [("A", "u2", f"a{n}", n) for n in (1, 2, 3)]
    + [("C", "u2", f"c{n}", n) for n in (1, 2, 3)]
    + [("A", "u3", f"a{n}", t) for n, t in zip((1, 2, 3, 4, 5), (100, 100, 200, 300, 400), strict=True)]
    + [("B", "u3", f"b{n}", t) for n, t in zip((1, 2, 3), (100, 300, 400), strict=True)]
)


def test_mixed_merges_train_events_by_time_with_domain_then_position_tie_break(tmp_path):
    build(tmp_path, MIXED_EVENTS, pretrain=("A", "B"), downstream=("C",))
    assert rows(SILVER_MIXED, tmp_path) == [
        ("u1", 0, "A", "a1", 10),
        ("u1", 1, "B", "b1", 15),
        ("u1", 2, "A", "a2", 20),
        ("u1", 3, "B", "b2", 20),
        ("u3", 0, "A", "a1", 100),
        ("u3", 1, "A", "a2", 100),
        ("u3", 2, "B", "b1", 100),
        ("u3", 3, "A", "a3", 200),
    ]
    # the downstream domain still gets its sequences and splits
    c = [e for e in events_of(tmp_path) if e[0] == "C"]
    assert [(e[1], e[3], e[5]) for e in c if e[1] == "u1"] == [
        ("u1", "c1", "train"),
        ("u1", "c2", "valid"),
        ("u1", "c3", "test"),
    ]


def test_downstream_domain_never_in_mixed_even_when_it_would_make_a_user_multi_domain(tmp_path):
    # Swap roles: pretrain A only, downstream B and C. u1 and u3 are then active in one
    # pretrain domain, so no mixed sequence exists at all.
    build(tmp_path, MIXED_EVENTS, pretrain=("A",), downstream=("B", "C"))
    assert rows(SILVER_MIXED, tmp_path) == []


# --- leakage guard, reference check and determinism on random data ---------------------------------


def random_bronze(seed: int = 7) -> tuple[list[Event], list[Item]]:
    """~900 events over 3 domains with many ts ties and duplicates; ~10% of items lack text."""
    rng = random.Random(seed)
    events = [
        (d, f"u{rng.randrange(40)}", f"{d}{rng.randrange(15)}", rng.randrange(60))
        for d in "ABC"
        for _ in range(300)
    ]
    items = [
        (d, f"{d}{n}", rng.choice([None, "ab"]) if rng.random() < 0.1 else f"Title {d}{n}", [f"L{n % 3}"])
        for d in "ABC"
        for n in range(15)
    ]
    return events, items


def reference(events, items, k, min_len, pretrain):
    """A plain-Python statement of the semantics, independent of the SQL."""
    has_text = {(d, i) for d, i, title, _ in items if title is not None and len(title.strip()) >= 3}
    first_line: dict[tuple, int] = {}
    for e, line in zip(events, lines(events), strict=True):
        first_line.setdefault(e, line)  # a duplicate keeps its first line
    kept = {e for e in set(events) if (e[0], e[2]) in has_text}
    while True:
        users, items_n = Counter((d, u) for d, u, _, _ in kept), Counter((d, i) for d, _, i, _ in kept)
        core = {e for e in kept if users[e[:2]] >= k and items_n[(e[0], e[2])] >= k}
        if core == kept:
            break
        kept = core
    seqs = defaultdict(list)
    for d, u, i, t in kept:
        seqs[(d, u)].append((t, first_line[(d, u, i, t)], i))  # time, then the raw order
    out = []
    for (d, u), seq in seqs.items():
        if len(seq) >= min_len:
            n = len(seq)
            for p, (t, _, i) in enumerate(sorted(seq)):
                out.append((d, u, p, i, t, "test" if p == n - 1 else "valid" if p == n - 2 else "train"))
    by_user = defaultdict(list)
    for d, u, p, i, t, s in out:
        if d in pretrain:
            by_user[u].append((t, d, p, i, s))
    mixed = [
        (u, n, d, i, t)
        for u, evs in by_user.items()
        if len({e[1] for e in evs}) >= 2
        for n, (t, d, _, i, _) in enumerate(sorted(e for e in evs if e[4] == "train"))
    ]
    return sorted(out), sorted(mixed)


def test_random_bronze_matches_reference_and_no_held_out_event_leaks(tmp_path):
    events, items = random_bronze()
    result = build(tmp_path, events, items, pretrain=("A", "B"), downstream=("C",), k_core=3)
    want_events, want_mixed = reference(events, items, 3, 3, {"A", "B"})
    got_events, got_mixed = events_of(tmp_path), rows(SILVER_MIXED, tmp_path)
    assert len(want_events) > 200 and len(want_mixed) > 50  # the random data exercises every step
    assert got_events == want_events
    assert got_mixed == want_mixed
    assert result["kcore_iterations"] >= 1

    # LEAKAGE GUARD: no valid/test event, keyed (domain, user, item, ts), reaches train or mixed
    held_out = {(d, u, i, t) for d, u, _, i, t, s in got_events if s != "train"}
    train = {(d, u, i, t) for d, u, _, i, t, s in got_events if s == "train"}
    mixed = {(d, u, i, t) for u, _, d, i, t in got_mixed}
    assert held_out and not held_out & train and not held_out & mixed
    assert mixed <= train and {d for _, _, d, _, _ in got_mixed} == {"A", "B"}
    # exactly one valid and one test per (domain, user), never earlier than any train event
    last = defaultdict(list)
    for d, u, p, _, t, s in got_events:
        last[(d, u)].append((p, t, s))
    for seq in last.values():
        assert [s for _, _, s in sorted(seq)][-2:] == ["valid", "test"]
        assert [s for _, _, s in seq].count("test") == 1
        assert max(t for _, t, s in seq if s == "train") <= min(t for _, t, s in seq if s != "train")


def test_deterministic_across_runs_and_thread_counts(tmp_path):
    # Same bronze, three runs (threads 1, 2, 2; the last with a progress bar): byte-identical
    # silver files, same config hash.
    events, items = random_bronze(seed=11)
    results = [
        build(tmp_path / f"run{n}", events, items, ("A", "B"), ("C",), k_core=2, threads=t, progress=n == 2)
        for n, t in enumerate((1, 2, 2))
    ]
    assert results[0]["fingerprints"] == results[1]["fingerprints"] == results[2]["fingerprints"]
    assert len(results[0]["fingerprints"]) == 4
    assert results[0]["config_hash"] == results[1]["config_hash"]
    assert results[0]["rows"]["silver.events"] > 0


def test_silver_files_are_in_key_order_though_sorted_on_surrogate_keys(tmp_path):
    # The exports sort on integer keys assigned in id order; the files must still be in the
    # artifacts' key order. random_bronze's ids sort differently as strings and as numbers
    # (u10 < u2, A10 < A2), so a key assigned in any other order would show here.
    events, items = random_bronze(seed=5)
    build(tmp_path, events, items, pretrain=("A", "B"), downstream=("C",), k_core=2)
    for artifact in (SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED, SILVER_STATS):
        table = read_table(artifact, tmp_path)
        keys = list(zip(*(table[c].to_pylist() for c in artifact.key), strict=True))
        assert len(keys) > 10 and keys == sorted(keys), artifact.name


def test_config_hash_covers_behaviors_and_domains_but_not_duckdb_resources(tmp_path):
    base = config(tmp_path, ("A",))
    assert behaviors_config_hash(base) == behaviors_config_hash(config(tmp_path, ("A",), threads=2))
    assert behaviors_config_hash(base) != behaviors_config_hash(config(tmp_path, ("A",), k_core=2))
    assert behaviors_config_hash(base) != behaviors_config_hash(config(tmp_path, ("A",), downstream=("B",)))


# --- domain coverage errors -------------------------------------------------------------------------


def test_configured_domain_without_bronze_events_is_a_clear_error(tmp_path):
    events = [("A", "u1", "a", 1), ("B", "u1", "b", 1)]
    with pytest.raises(BehaviorsError) as err:
        build(tmp_path, events, pretrain=("A",), downstream=("Grocery",))
    msg = str(err.value)
    assert "domains.downstream: domain 'Grocery' has no rows in" in msg
    assert "bronze/interactions (it has: A, B)" in msg
    assert "\n" not in msg


def test_configured_domain_without_bronze_items_is_a_clear_error(tmp_path):
    events = [("A", "u1", "a", 1), ("B", "u1", "b", 1)]
    with pytest.raises(BehaviorsError, match=r"domains.pretrain: domain 'B' has no rows in .*bronze/items"):
        build(tmp_path, events, items=[("A", "a", "Title a", [])], pretrain=("A", "B"))


def test_exports_are_cut_at_fixed_rows_whatever_batches_duckdb_yields():
    # DuckDB's batch sizes vary with its thread count; row groups must not: the same 10 rows
    # arriving as 3+3+4 or 1+9 are written as 4+4+2 either way, and each query (a partition)
    # starts its own cuts: 10 rows then 5 rows are 4+4+2 then 4+1.
    import pyarrow as pa

    from cprec_core.behaviors import _fixed_chunks

    schema = pa.schema([("x", pa.int64())])

    def stream(queries):
        for number, (values, sizes) in enumerate(queries):
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            for a, n in zip(starts, sizes, strict=True):
                yield number, pa.record_batch([values[a : a + n]], schema=schema)

    first, second = list(range(10)), list(range(100, 105))
    for sizes in ([3, 3, 4], [1, 9], [10], [2, 0, 8]):
        chunks = list(_fixed_chunks(stream([(first, sizes), (second, [3, 2])]), 4))
        assert [c.num_rows for c in chunks] == [4, 4, 2, 4, 1]
        assert [v for c in chunks for v in c["x"].to_pylist()] == first + second


def test_read_ahead_hands_over_every_batch_in_query_order_and_raises_the_readers_error():
    import threading

    import duckdb
    import pytest

    from cprec_core.behaviors import _read_ahead

    con = duckdb.connect()
    con.execute("create table t as select range as x from range(300000)")
    queries = [
        ("select x from t where x % 2 = $r order by x", {"r": 0}),
        ("select x from t where x % 2 = $r order by x", {"r": 1}),
    ]
    with _read_ahead(con, queries, depth=1) as batches:
        got = [(n, v) for n, b in batches for v in b.column(0).to_pylist()]
    assert [n for n, _ in got] == [0] * 150000 + [1] * 150000
    assert [v for _, v in got] == list(range(0, 300000, 2)) + list(range(1, 300000, 2))

    failing = [("select 1", None), ("select * from no_such_table", None)]
    with pytest.raises(duckdb.Error, match="no_such_table"), _read_ahead(con, failing) as batches:
        list(batches)

    # a writer that fails mid-stream leaves the block: the reader thread stops, nothing hangs
    with pytest.raises(RuntimeError, match="disk full"), _read_ahead(con, queries, depth=1) as batches:
        next(batches)
        raise RuntimeError("disk full")
    assert not [t for t in threading.enumerate() if t.name == "behaviors-export"]
