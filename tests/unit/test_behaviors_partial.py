"""A partial behaviors rebuild: only the domains whose bronze changed go through the SQL, the others
keep their silver partitions as they are, and every artifact comes out byte for byte as a full
rebuild writes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from behaviors_fixtures import Event, build
from test_behaviors import random_bronze

import cprec_core.behaviors as behaviors
from cprec_core.schema import SILVER_EVENTS, SILVER_MIXED

DOMAINS = {"pretrain": ("A", "B"), "downstream": ("C",)}


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of 16 rows: a partition cut where the whole stream is cut would show here."""
    monkeypatch.setattr(behaviors, "BATCH_ROWS", 16)


def later_and_fewer_in_b(events: list[Event]) -> list[Event]:
    """Domain B's log replaced: its events 100 s later, its last 50 gone; A and C as they were."""
    b = [(d, u, i, t + 100) for d, u, i, t in events if d == "B"][:250]
    return [e for e in events if e[0] != "B"] + b


def test_one_changed_domain_is_rebuilt_and_the_silver_equals_a_full_rebuild(tmp_path: Path) -> None:
    events, items = random_bronze(seed=3)
    first = build(tmp_path / "run", events, items, **DOMAINS, k_core=2)
    assert first["rebuilt_domains"] == ["A", "B", "C"] and first["kept_domains"] == []
    a_file = SILVER_EVENTS.path(tmp_path / "run") / "domain=A" / "part-0.parquet"
    a_inode = a_file.stat().st_ino

    changed = later_and_fewer_in_b(events)
    again = build(tmp_path / "run", changed, items, **DOMAINS, k_core=2)
    fresh = build(tmp_path / "fresh", changed, items, **DOMAINS, k_core=2)

    assert again["rebuilt_domains"] == ["B"] and again["kept_domains"] == ["A", "C"]
    assert fresh["rebuilt_domains"] == ["A", "B", "C"]
    assert again["fingerprints"] == fresh["fingerprints"]  # items, events, mixed, stats: same bytes
    assert again["fingerprints"] != first["fingerprints"]  # B's sequences and the mixed ones moved
    for summary in ("counts", "rows", "dropped_without_text", "duplicate_item_records"):
        assert again[summary] == fresh[summary], summary
    assert a_file.stat().st_ino == a_inode  # A's partition was linked into the new silver, not rewritten
    assert not again["kept_mixed"]  # B is a pretrain domain: the mixed sequences were joined again


def test_a_changed_downstream_domain_keeps_the_mixed_sequences_as_they_are(tmp_path: Path) -> None:
    events, items = random_bronze(seed=3)
    build(tmp_path / "run", events, items, **DOMAINS, k_core=2)
    mixed = SILVER_MIXED.path(tmp_path / "run") / "part-0.parquet"
    inode = mixed.stat().st_ino

    changed = [(d, u, i, t + 100) if d == "C" else (d, u, i, t) for d, u, i, t in events][:-40]
    assert {e[0] for e in set(events) - set(changed)} == {"C"}  # only the downstream domain moved
    again = build(tmp_path / "run", changed, items, **DOMAINS, k_core=2)
    fresh = build(tmp_path / "fresh", changed, items, **DOMAINS, k_core=2)

    assert again["rebuilt_domains"] == ["C"] and again["kept_mixed"] and not fresh["kept_mixed"]
    assert again["fingerprints"] == fresh["fingerprints"]
    assert "60_fct_mixed" not in again["step_seconds"]
    assert mixed.stat().st_ino == inode  # linked, not rewritten


def test_a_changed_setting_or_silver_of_another_build_rebuilds_every_domain(tmp_path: Path) -> None:
    events, items = random_bronze(seed=3)
    changed = later_and_fewer_in_b(events)
    build(tmp_path / "run", events, items, **DOMAINS, k_core=2)
    assert build(tmp_path / "run", changed, items, **DOMAINS, k_core=3)["kept_domains"] == []

    # silver.mixed from another build beside the rest: nothing on disk is trusted
    build(tmp_path / "other", changed, items, **DOMAINS, k_core=2)
    build(tmp_path / "run", events, items, **DOMAINS, k_core=2)
    mixed = "silver/mixed"
    (tmp_path / "run" / mixed).rename(tmp_path / "stale")
    (tmp_path / "other" / mixed).rename(tmp_path / "run" / mixed)
    result = build(tmp_path / "run", changed, items, **DOMAINS, k_core=2)
    assert result["kept_domains"] == []
    assert (
        result["fingerprints"]
        == build(tmp_path / "fresh", changed, items, **DOMAINS, k_core=2)["fingerprints"]
    )


def test_domains_built_apart_then_joined_equal_one_build(tmp_path: Path) -> None:
    """The fan-out path (each domain alone into staging, then the join) with fanout.in_process."""
    from behaviors_fixtures import config

    from cprec_core.behaviors import build_behaviors
    from cprec_core.fanout import in_process

    events, items = random_bronze(seed=3)
    whole = build(tmp_path / "whole", events, items, **DOMAINS, k_core=2)
    build(tmp_path / "apart", events, items, **DOMAINS, k_core=2)  # bronze, and a first silver
    cfg = config(tmp_path / "apart", DOMAINS["pretrain"], DOMAINS["downstream"], k_core=2)
    (tmp_path / "apart" / "silver").rename(tmp_path / "old-silver")  # nothing on disk to keep
    apart = build_behaviors(cfg, map_domains=in_process)
    assert apart["rebuilt_domains"] == ["A", "B", "C"] and apart["kept_domains"] == []
    for summary in ("fingerprints", "counts", "kcore_iterations", "duplicate_item_records", "rows"):
        assert apart[summary] == whole[summary], summary
    assert whole["kcore_iterations"] >= 1
    assert not list((tmp_path / "apart" / "tmp").glob("behaviors-*"))  # staging removed

    # a refresh on the fan-out path: only B is built (apart), A and C stay
    changed = later_and_fewer_in_b(events)
    fresh = build(tmp_path / "fresh", changed, items, **DOMAINS, k_core=2)
    build(tmp_path / "apart", changed, items, **DOMAINS, k_core=2)  # new bronze (and an in-process refresh)
    (tmp_path / "apart" / "silver").rename(tmp_path / "refreshed-silver")
    (tmp_path / "old-silver").rename(tmp_path / "apart" / "silver")  # back to the silver of `events`
    again = build_behaviors(cfg, map_domains=in_process)
    assert again["rebuilt_domains"] == ["B"] and again["kept_domains"] == ["A", "C"]
    assert again["fingerprints"] == fresh["fingerprints"]
