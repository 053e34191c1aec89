"""Synthetic multi-domain generator: determinism, counts, learnable cross-domain themes, chunking."""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from cprec_core.config import IngestConfig, SourceConfig, SynthConfig
from cprec_core.ingest import amazon2023, synth
from cprec_core.ingest.common import ingest_file

WORD_THEME = {w: t for t, words in enumerate(synth.THEMES) for w in words}


def _cfg(tmp_path: Path, **kw) -> SynthConfig:
    base = dict(
        out_dir=tmp_path,
        domains=["Books", "Toys", "Garden"],  # Garden has no vocabulary: the fallback nouns
        n_users=150,
        n_items_per_domain=40,
        n_interactions=6000,
        n_themes=8,
        chunk_rows=1000,
    )
    return SynthConfig(**(base | kw))


def _lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def _theme(title: str) -> int:
    (theme,) = {WORD_THEME[w] for w in re.split(r"[ ,]+", title) if w in WORD_THEME}
    return theme


def test_same_config_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    stats = synth.generate_synthetic(_cfg(a))
    assert synth.generate_synthetic(_cfg(b)) == stats
    synth.generate_synthetic(_cfg(c, seed=1))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(f"{p}{d}.jsonl.gz" for d in ("Books", "Toys", "Garden") for p in ("", "meta_"))
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert (a / "Books.jsonl.gz").read_bytes() != (c / "Books.jsonl.gz").read_bytes()
    assert not [p for p in a.iterdir() if p.name.startswith(".")]  # no temp files left


def test_counts_and_format(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    stats = synth.generate_synthetic(cfg)
    assert sum(s["rows"] for s in stats.values()) == cfg.n_interactions
    for domain, s in stats.items():
        reviews = _lines(tmp_path / f"{domain}.jsonl.gz")
        meta = _lines(tmp_path / f"meta_{domain}.jsonl.gz")
        assert len(reviews) == s["rows"] and len({r["user_id"] for r in reviews}) == s["users"]
        assert len(meta) == s["items"] == cfg.n_items_per_domain
        assert set(reviews[0]) == {
            "rating", "title", "text", "images", "asin", "parent_asin", "user_id", "timestamp",
            "helpful_vote", "verified_purchase",
        }  # fmt: skip
        assert {r["rating"] for r in reviews} <= {1.0, 2.0, 3.0, 4.0, 5.0}
        with gzip.open(tmp_path / f"{domain}.jsonl.gz", "rt") as f:  # lines are exactly json.dumps output
            assert [line.rstrip("\n") for line in f][:50] == [json.dumps(r) for r in reviews[:50]]
        # user start dates 2015-2023, then gaps of hours to weeks
        assert all(1_420_070_400_000 <= r["timestamp"] < 1_900_000_000_000 for r in reviews)
        assert meta[0]["categories"][0] == meta[0]["main_category"] and len(meta[0]["categories"]) == 3
        assert isinstance(meta[0]["description"], list) and isinstance(meta[0]["features"], list)
    # distinct ids: every item id is unique across domains
    ids = [m["parent_asin"] for d in stats for m in _lines(tmp_path / f"meta_{d}.jsonl.gz")]
    assert len(set(ids)) == len(ids)


def test_themes_are_learnable_across_domains(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    synth.generate_synthetic(cfg)
    theme_of: dict[str, int] = {}
    events = []
    for d in cfg.domains:
        theme_of |= {m["parent_asin"]: _theme(m["title"]) for m in _lines(tmp_path / f"meta_{d}.jsonl.gz")}
        events += [
            (r["user_id"], r["timestamp"], d, r["parent_asin"]) for r in _lines(tmp_path / f"{d}.jsonl.gz")
        ]
    events.sort()
    themes = [theme_of[e[3]] for e in events]
    labelled = list(zip(events, themes, strict=True))
    pairs = [(a, b) for (ea, a), (eb, b) in itertools.pairwise(labelled) if ea[0] == eb[0]]
    same = sum(a == b for a, b in pairs) / len(pairs)
    shares = np.bincount(themes) / len(themes)
    chance = float((shares**2).sum())
    # stickiness 0.7 + 0.3 * P(fresh draw repeats) ≈ 0.8; chance with 8 themes is ≈ 1/8
    assert same > 0.6 and chance < 0.25, (same, chance)

    # transfer: a user's favourite theme in one domain is usually their favourite in another
    per: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for (user, _, domain, _), t in zip(events, themes, strict=True):
        per[(user, domain)][t] += 1
    agree = total = 0
    for (user, domain), counts in per.items():
        for other in cfg.domains:
            if (
                other > domain
                and (user, other) in per
                and counts.total() >= 5
                and per[(user, other)].total() >= 5
            ):
                total += 1
                agree += counts.most_common(1)[0][0] == per[(user, other)].most_common(1)[0][0]
    assert total > 30 and agree / total > 0.5, (agree, total)

    # a user's events are interleaved across domains in time, not one domain after another
    by_user: dict[str, list[str]] = defaultdict(list)
    for user, _, domain, _ in events:
        by_user[user].append(domain)
    switches = [
        sum(a != b for a, b in itertools.pairwise(ds)) for ds in by_user.values() if len(set(ds)) >= 2
    ]
    assert np.median(switches) >= 3


def test_generation_is_chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bounded memory by construction: every chunk holds about chunk_rows events, never the whole set
    sizes: list[int] = []
    real = synth._chunk_events

    def spy(cfg, cat, users, counts, rng):
        sizes.append(int(counts.sum()))
        return real(cfg, cat, users, counts, rng)

    monkeypatch.setattr(synth, "_chunk_events", spy)
    cfg = _cfg(tmp_path, n_interactions=6000, chunk_rows=1000)
    synth.generate_synthetic(cfg)
    # 6000 events / 1000 per chunk → 6 chunks (a chunk ends at the user crossing the boundary)
    assert len(sizes) == 6 and sum(sizes) == 6000
    assert max(sizes) < 1000 + 200  # one user has far fewer than 200 events here


def test_bad_rows_are_the_quarantine(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, bad_row_fraction=0.05)
    stats = synth.generate_synthetic(cfg)
    icfg = IngestConfig(sources=[], batch_rows=1000)
    reasons = Counter()
    for f in amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path), icfg):
        bad: list = []
        report = ingest_file(f, icfg, lambda t: None, bad.append)
        if f.table == "interactions":
            assert report.quarantined == stats[f.domain]["bad_rows"] > 0
        else:
            assert report.quarantined == 0
        reasons.update(_kind(r) for t in bad for r in t["reason"].to_pylist())
    # the four kinds injected: a cut line, a missing user, a date string, microseconds as ms
    assert set(reasons) == {"cut", "no user", "date", "micro"}, reasons
    assert reasons.total() == sum(s["bad_rows"] for s in stats.values())


def _kind(reason: str) -> str:
    if reason.startswith("invalid JSON: "):
        return "cut"
    if reason == "field user_id: missing":
        return "no user"
    if re.fullmatch(r'field timestamp: expected int ms, got "\d{4}-\d\d-\d\d"', reason):
        return "date"
    if re.match(r"field timestamp: \d{16} ms = \d{13} s outside", reason):
        return "micro"
    return reason


def test_theme_vocabulary_and_limits(tmp_path: Path) -> None:
    words = [w for t in synth.THEMES for w in t]
    assert len(synth.THEMES) == 64 and len(set(words)) == len(words)  # n_themes allows up to 64
    assert {len(t) for t in synth.THEMES} == {synth.THEME_WORDS}
    assert not set(words) & set(synth.MODIFIERS)
    vocab = [
        *words,
        *synth.MODIFIERS,
        *synth.STORES,
        *synth.REVIEW_TITLES,
        *synth.REVIEW_OPENERS,
        *synth.DOMAIN_VOCAB,
    ]
    vocab += [
        w
        for main, leaves in synth.DOMAIN_VOCAB.values()
        for leaf in leaves
        for w in (main, *leaf[:2], *leaf[2])
    ]
    assert not [w for w in vocab if '"' in w or "\\" in w]  # review lines are formatted without escaping
    with pytest.raises(ValueError, match=r"synth.n_items_per_domain=10 must be >= synth.n_themes=12"):
        synth.generate_synthetic(_cfg(tmp_path, n_items_per_domain=10, n_themes=12))
