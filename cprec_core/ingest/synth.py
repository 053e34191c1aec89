"""Synthetic multi-domain behaviour logs in the Amazon Reviews 2023 file format.

Reads: nothing (config `synth` only). Writes: `<out_dir>/<Domain>.jsonl.gz` (reviews) and
`<out_dir>/meta_<Domain>.jsonl.gz` (item metadata) for every `synth.domains`, which the
amazon2023 reader ingests. Stands in for PAPER.md §2's seven pre-training domains plus a held-out
downstream domain at demo scale.

Why CPT can help here: users are shared across domains and follow LATENT CROSS-DOMAIN TASTES
that are visible in item TEXT. Each item has one of `n_themes` themes (a word family such as
"Vintage / Antique / Heirloom"), and its title joins a theme word with a domain noun
("Vintage Classic Reading Lamp", "Heirloom Cookbook - Antique Collection"). Each user has a
sparse Dirichlet preference over themes shared by all domains; their event sequence is a Markov
chain over themes (keep the previous theme with prob `theme_stickiness`, else draw from the
preference), the domain of each event is drawn from the user's own domain mix, and the item
within (domain, theme) follows a Zipf popularity (`popularity_skew`). A language model that
learned "theme words repeat along a user's sequence" on some domains can use it on a new one.

Generation is vectorised per chunk of users (about `chunk_rows` events each), so memory is
bounded from 10 k to 50 M events; the same config gives byte-identical files (seeded RNG per
chunk, gzip mtime 0, no file name in the gzip header).

Counts on the default config (seed 0, 40,000 events, 2,000 users, 300 items per domain), as
returned (rows / distinct users; every domain has 300 items, 299-300 of them reviewed):
    Books 6,646 / 866; Electronics 4,875 / 623; Home 4,796 / 655; Sports 4,847 / 623;
    Toys 4,062 / 546; Beauty 5,426 / 771; Grocery 9,348 / 1,175.
    1,744 users are active in >= 2 domains; 55% of (user, domain) pairs have >= 5 events;
    3.6% of events repeat an earlier (user, item). Consecutive items of a user share a theme
    79% of the time (chance: 8%).
    0.8 s and 74 MB peak RSS on a 2-core box; 2 M events (100 k users): 25 s, 100 MB.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from rich.progress import Progress

from cprec_core.artifacts import atomic_write_text
from cprec_core.config import SynthConfig

# Theme word families: the first word names the theme. Every word is unique across themes.
THEMES: tuple[tuple[str, ...], ...] = (
    ("Vintage", "Antique", "Heirloom"),
    ("Neon", "Glow", "Electric"),
    ("Ocean", "Coastal", "Tidal"),
    ("Forest", "Woodland", "Pine"),
    ("Minimalist", "Simple", "Clean-Line"),
    ("Retro", "Groovy", "Seventies"),
    ("Arctic", "Frost", "Polar"),
    ("Desert", "Sandstone", "Cactus"),
    ("Cosmic", "Galaxy", "Starlight"),
    ("Garden", "Floral", "Blossom"),
    ("Urban", "Street", "Metro"),
    ("Royal", "Regal", "Velvet"),
    ("Rustic", "Farmhouse", "Barnwood"),
    ("Tropical", "Palm", "Island"),
    ("Nordic", "Fjord", "Birch"),
    ("Zen", "Bamboo", "Tranquil"),
    ("Gothic", "Raven", "Midnight"),
    ("Pastel", "Soft-Hued", "Candy"),
    ("Safari", "Savanna", "Jungle"),
    ("Steampunk", "Brass", "Clockwork"),
    ("Alpine", "Summit", "Glacier"),
    ("Boho", "Fringe", "Patchwork"),
    ("Industrial", "Steel", "Concrete"),
    ("Kawaii", "Bunny", "Sweetheart"),
    ("Nautical", "Anchor", "Harbor"),
    ("Celestial", "Moonlit", "Lunar"),
    ("Autumn", "Maple", "Harvest"),
    ("Springtime", "Meadow", "Dewdrop"),
    ("Volcanic", "Lava", "Obsidian"),
    ("Crystal", "Prism", "Quartz"),
    ("Sunset", "Golden-Hour", "Amber"),
    ("Storm", "Thunder", "Slate"),
    ("Pixel", "Arcade", "8-Bit"),
    ("Mediterranean", "Olive", "Terracotta"),
    ("Art-Deco", "Gatsby", "Gilded"),
    ("Western", "Cowboy", "Ranch"),
    ("Jazz", "Bebop", "Smoky"),
    ("Botanical", "Fern", "Ivy"),
    ("Rainbow", "Spectrum", "Vivid"),
    ("Monochrome", "Ebony", "Ivory"),
    ("Marble", "Carrara", "Stonecut"),
    ("Coral", "Reef", "Lagoon"),
    ("Lavender", "Lilac", "Violet"),
    ("Emerald", "Jade", "Verdant"),
    ("Ruby", "Crimson", "Scarlet"),
    ("Sapphire", "Cobalt", "Azure"),
    ("Honey", "Beeswax", "Clover"),
    ("Copper", "Bronze", "Patina"),
    ("Cyber", "Chrome", "Hologram"),
    ("Samurai", "Katana", "Shogun"),
    ("Viking", "Rune", "Norse"),
    ("Fairy", "Pixie", "Enchanted"),
    ("Pirate", "Treasure", "Buccaneer"),
    ("Circus", "Carnival", "Big-Top"),
    ("Origami", "Paper-Fold", "Crane"),
    ("Denim", "Indigo", "Selvedge"),
    ("Canyon", "Mesa", "Red-Rock"),
    ("Gingham", "Polka-Dot", "Picnic"),
    ("Bauhaus", "Geometric", "Primary"),
    ("Sakura", "Cherry-Blossom", "Hanami"),
    ("Orchard", "Apple", "Cider"),
    ("Midcentury", "Atomic", "Teak"),
    ("Citrus", "Lemon", "Zest"),
    ("Noir", "Fedora", "Shadow"),
)
MODIFIERS = ("Classic", "Deluxe", "Compact", "Premium", "Handmade", "Everyday", "Signature", "Essential")

# domain → (main_category, [(subcategory, leaf category, nouns)]): categories run general → leaf.
DOMAIN_VOCAB: dict[str, tuple[str, list[tuple[str, str, tuple[str, ...]]]]] = {
    "Books": (
        "Books",
        [
            ("Literature & Fiction", "Novels", ("Novel", "Saga")),
            ("Arts & Photography", "Photo Books", ("Photo Book", "Art Album")),
            ("Cookbooks", "Baking", ("Cookbook", "Baking Book")),
            ("Travel", "Travel Guides", ("Travel Guide", "Atlas")),
            ("Children's Books", "Picture Books", ("Picture Book", "Bedtime Story")),
        ],
    ),
    "Electronics": (
        "Electronics",
        [
            ("Audio", "Headphones", ("Headphones", "Earbuds")),
            ("Audio", "Speakers", ("Bluetooth Speaker", "Soundbar")),
            ("Accessories", "Cases", ("Phone Case", "Tablet Sleeve")),
            ("Computers", "Peripherals", ("Keyboard", "Mouse")),
            ("Smart Home", "Smart Lights", ("LED Strip", "Smart Bulb")),
        ],
    ),
    "Home": (
        "Home & Kitchen",
        [
            ("Lighting", "Lamps", ("Reading Lamp", "Table Lamp")),
            ("Bedding", "Throws", ("Throw Blanket", "Quilt")),
            ("Decor", "Wall Art", ("Wall Print", "Tapestry")),
            ("Kitchen", "Drinkware", ("Coffee Mug", "Teapot")),
            ("Storage", "Organizers", ("Storage Basket", "Wall Shelf")),
        ],
    ),
    "Sports": (
        "Sports & Outdoors",
        [
            ("Camping", "Tents", ("Tent", "Sleeping Bag")),
            ("Fitness", "Yoga", ("Yoga Mat", "Water Bottle")),
            ("Cycling", "Cycling Accessories", ("Bike Bell", "Cycling Jersey")),
            ("Outdoor Recreation", "Backpacks", ("Daypack", "Hiking Backpack")),
            ("Team Sports", "Balls", ("Soccer Ball", "Basketball")),
        ],
    ),
    "Toys": (
        "Toys & Games",
        [
            ("Puzzles", "Jigsaw Puzzles", ("Jigsaw Puzzle", "3D Puzzle")),
            ("Building Toys", "Building Sets", ("Building Set", "Block Kit")),
            ("Stuffed Animals", "Plush", ("Plush Bear", "Plush Fox")),
            ("Games", "Board Games", ("Board Game", "Card Game")),
            ("Arts & Crafts", "Craft Kits", ("Craft Kit", "Sticker Book")),
        ],
    ),
    "Beauty": (
        "Beauty & Personal Care",
        [
            ("Fragrance", "Perfume", ("Eau de Parfum", "Body Mist")),
            ("Skin Care", "Moisturizers", ("Face Cream", "Hand Lotion")),
            ("Makeup", "Lips", ("Lipstick", "Lip Balm")),
            ("Bath", "Bath Bombs & Soaps", ("Bath Bomb", "Soap Bar")),
            ("Nails", "Nail Polish", ("Nail Polish", "Nail Kit")),
        ],
    ),
    "Grocery": (
        "Grocery & Gourmet Food",
        [
            ("Beverages", "Tea", ("Tea Sampler", "Herbal Tea")),
            ("Beverages", "Coffee", ("Coffee Beans", "Cold Brew")),
            ("Snacks", "Chocolate", ("Chocolate Bar", "Truffle Box")),
            ("Pantry", "Spices", ("Spice Blend", "Seasoning Jar")),
            ("Snacks", "Cookies", ("Cookie Tin", "Biscuit Box")),
        ],
    ),
}
FALLBACK_LEAVES = [
    ("Essentials", "Accessories", ("Accessory", "Gift Set")),
    ("Essentials", "Supplies", ("Supply Pack", "Starter Kit")),
]
STORES = (
    "Northwind",
    "Acme Goods",
    "Bluebird Co",
    "Harbor & Hill",
    "Maple Works",
    "Kestrel",
    "Lumen",
    "Oakline",
)
REVIEW_TITLES = (
    "Love it",
    "Great value",
    "Five stars",
    "Exactly as described",
    "Not for me",
    "Would buy again",
)
REVIEW_OPENERS = (
    "Really happy with this",
    "It is fine",
    "Bought this as a gift",
    "Better than expected",
    "Meh",
)

START_MIN = int(datetime(2015, 1, 1, tzinfo=UTC).timestamp())
START_MAX = int(datetime(2023, 1, 1, tzinfo=UTC).timestamp())
B32 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", dtype=np.uint8)
RATING_P = {  # ratings lean high (as on Amazon), more so for themes the user prefers
    True: np.cumsum([0.02, 0.03, 0.08, 0.22, 0.65]),
    False: np.cumsum([0.10, 0.10, 0.20, 0.30, 0.30]),
}
USER_DOMAIN_P = 0.35  # each extra domain joins a user's set with this probability
THEME_WORDS = 3  # words per theme family
THEME_ALPHA = 0.3  # Dirichlet concentration of a user's theme preference: small = sparse tastes


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection on uint64, so distinct inputs give distinct ids."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _base32(x: np.ndarray, chars: int) -> list[str]:
    shifts = np.arange(chars - 1, -1, -1, dtype=np.uint64) * np.uint64(5)
    digits = B32[((x[:, None] >> shifts) & np.uint64(31)).astype(np.intp)]
    return [bytes(row).decode() for row in digits]


def user_ids(index: np.ndarray, seed: int) -> list[str]:
    """Amazon-2023-looking user ids (`A` + 26 base-32 chars), unique per (seed, index)."""
    x = index.astype(np.uint64) ^ _splitmix(np.array([seed], dtype=np.uint64))
    return [f"A{a}{b}" for a, b in zip(_base32(_splitmix(x), 13), _base32(_splitmix(~x), 13), strict=True)]


def item_ids(index: np.ndarray, seed: int) -> list[str]:
    """ASIN-looking ids (`B0` + 8 base-32 chars), unique for < 2^40 items (a bijection mod 2^40)."""
    mask = np.uint64((1 << 40) - 1)
    offset = _splitmix(np.array([seed], dtype=np.uint64)) & mask
    with np.errstate(over="ignore"):  # odd multipliers and xor-shifts are bijections mod 2^40
        x = (index.astype(np.uint64) * np.uint64(0x5DEECE66D) + offset) & mask
        x = ((x ^ (x >> np.uint64(20))) * np.uint64(0x9E3779B1)) & mask
    x = x ^ (x >> np.uint64(17))
    return [f"B0{s}" for s in _base32(x, 8)]


class Catalogue:
    """Items of every domain: theme, text, and the Zipf sampler over (domain, theme) groups."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        n, t = cfg.n_items_per_domain, cfg.n_themes
        self.n_themes = t
        self.n_items = n
        self.theme = np.concatenate([rng.permutation(np.arange(n) % t) for _ in cfg.domains])
        self.ids = item_ids(np.arange(n * len(cfg.domains)), cfg.seed)
        group = np.repeat(np.arange(len(cfg.domains)), n) * t + self.theme
        self.order = np.argsort(group, kind="stable")  # item indices grouped by (domain, theme)
        sizes = np.bincount(group, minlength=len(cfg.domains) * t)
        self.group_end = np.cumsum(sizes)
        cum = np.empty(len(group))
        for g, (start, end) in enumerate(zip(self.group_end - sizes, self.group_end, strict=True)):
            w = 1.0 / (rng.permutation(end - start) + 1.0) ** cfg.popularity_skew
            cum[start:end] = g + np.cumsum(w) / w.sum()
        self.cum = cum
        self.vocab = [DOMAIN_VOCAB.get(d, (d.replace("_", " "), FALLBACK_LEAVES)) for d in cfg.domains]
        # per-item text choices as small integer arrays: meta records are rendered while writing
        size = len(group)
        self.draw = {
            "leaf": rng.integers(0, 1 << 20, size),  # taken modulo each domain's number of leaves
            "noun": rng.integers(0, 1 << 20, size),
            "mod": rng.integers(0, len(MODIFIERS), size),
            "w1": (w1 := rng.integers(0, THEME_WORDS, size)),
            "w2": (w1 + rng.integers(1, THEME_WORDS, size)) % THEME_WORDS,  # another word of the theme
            "pattern": rng.integers(0, 4, size),
            "price": np.where(rng.random(size) < 0.1, np.nan, np.round(rng.lognormal(3.0, 0.7, size), 2)),
            "avg": np.round(rng.uniform(3.0, 5.0, size), 1),
            "n_ratings": rng.integers(1, 500, size),
            "store": rng.integers(0, len(STORES), size),
        }
        self.titles = self._titles()
        self.domain_weight = rng.dirichlet(np.full(len(cfg.domains), 4.0))  # domains differ in size

    def sample(self, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Item indices drawn from their (domain, theme) groups with Zipf popularity."""
        pos = np.searchsorted(self.cum, group + u, side="right")
        return self.order[np.minimum(pos, self.group_end[group] - 1)]

    def _words(self, j: int) -> tuple[str, str, str, str, str, str, str]:
        """(main, sub, leaf, noun, modifier, theme word 1, theme word 2) of item j."""
        main, leaves = self.vocab[j // self.n_items]
        sub, leaf, nouns = leaves[self.draw["leaf"][j] % len(leaves)]
        words = THEMES[self.theme[j]]
        noun = nouns[self.draw["noun"][j] % len(nouns)]
        return (
            main,
            sub,
            leaf,
            noun,
            MODIFIERS[self.draw["mod"][j]],
            words[self.draw["w1"][j]],
            words[self.draw["w2"][j]],
        )

    def _titles(self) -> list[str]:
        seen: dict[str, int] = {}
        titles = []
        for j in range(len(self.theme)):
            _, _, _, noun, mod, w1, w2 = self._words(j)
            title = (
                f"{w1} {mod} {noun}",
                f"{w1} {noun} - {w2} Collection",
                f"{mod} {w1} {noun}",
                f"The {w1} {noun}",
            )[self.draw["pattern"][j]]
            seen[title] = seen.get(title, 0) + 1
            titles.append(title if seen[title] == 1 else f"{title}, No. {seen[title]}")
        return titles

    def meta_line(self, j: int) -> str:
        """Item j as one Amazon-2023 metadata JSON line (field order of the real files)."""
        main, sub, leaf, noun, mod, w1, w2 = self._words(j)
        price = float(self.draw["price"][j])
        record = {
            "main_category": main,
            "title": self.titles[j],
            "average_rating": float(self.draw["avg"][j]),
            "rating_number": int(self.draw["n_ratings"][j]),
            "features": [f"{leaf} in a {w2.lower()} style", f"{mod} quality"],
            "description": [f"A {mod.lower()} {noun.lower()} with a {w1.lower()} look.", f"{sub}."],
            "price": None if np.isnan(price) else price,
            "images": [],
            "videos": [],
            "store": STORES[self.draw["store"][j]],
            "categories": [main, sub, leaf],
            "details": {},
            "parent_asin": self.ids[j],
            "bought_together": None,
        }
        return json.dumps(record) + "\n"


def _pick(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise inverse-CDF draw: index of the first cum[i, k] > u[i]."""
    return np.minimum((cum <= u[:, None]).sum(axis=1), cum.shape[1] - 1)


def _chunk_events(
    cfg: SynthConfig, cat: Catalogue, users: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Every event of one chunk of users, in (user, time) order."""
    n_dom, t = len(cfg.domains), cfg.n_themes
    n = len(users)
    # domains: 1 + Binomial(D-1, p) of them per user, chosen by weighted sampling without replacement
    k = 1 + rng.binomial(n_dom - 1, USER_DOMAIN_P, size=n)
    keys = rng.exponential(size=(n, n_dom)) / cat.domain_weight
    active = np.argsort(np.argsort(keys, axis=1), axis=1) < k[:, None]
    dom_p = rng.gamma(1.0, size=(n, n_dom)) * active
    theme_p = rng.gamma(THEME_ALPHA, size=(n, t)) + 1e-12
    dom_cum = np.cumsum(dom_p / dom_p.sum(1, keepdims=True), axis=1)
    theme_p /= theme_p.sum(1, keepdims=True)
    theme_cum = np.cumsum(theme_p, axis=1)

    who = np.repeat(np.arange(n), counts)
    e = len(who)
    first = np.zeros(e, dtype=bool)
    first[np.cumsum(counts) - counts] = True
    # Markov chain over themes: a fresh draw from the preference unless the theme is kept
    fresh = _pick(theme_cum[who], rng.random(e))
    keep = (rng.random(e) < cfg.theme_stickiness) & ~first
    theme = fresh[np.maximum.accumulate(np.where(keep, 0, np.arange(e)))]
    domain = _pick(dom_cum[who], rng.random(e))
    group = domain * t + theme
    item = cat.sample(group, rng.random(e))
    for _ in range(5):  # people rarely buy the same thing twice: redraw repeats a few times
        _, firsts = np.unique(users[who] * len(cat.theme) + item, return_index=True)
        repeat = np.ones(e, dtype=bool)
        repeat[firsts] = False
        if not repeat.any():
            break
        item[repeat] = cat.sample(group[repeat], rng.random(int(repeat.sum())))
    # time: a user-specific start, then gaps of hours to weeks (log-normal, median 1.5 days)
    gaps = np.clip(rng.lognormal(np.log(1.5 * 86400), 1.5, size=e), 3600, 45 * 86400).astype(np.int64)
    gaps[first] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[first], counts)
    start = rng.integers(START_MIN, START_MAX, size=n)
    ts_ms = (start[who] + elapsed) * 1000 + rng.integers(0, 1000, size=e)
    liked = theme_p[who, theme] > 1.0 / t
    rating = 1 + _pick(np.where(liked[:, None], RATING_P[True], RATING_P[False]), rng.random(e))
    return {
        "user": users[who],
        "domain": domain,
        "item": item,
        "ts_ms": ts_ms,
        "rating": rating,
        "verified": rng.random(e) < 0.9,
        "helpful": rng.poisson(0.6, size=e),
        "review": rng.integers(0, len(REVIEW_TITLES) * len(REVIEW_OPENERS), size=e),
        "bad": np.where(rng.random(e) < cfg.bad_row_fraction, rng.integers(0, 4, size=e), -1),
    }


def _review_line(
    uid: str,
    asin: str,
    item_title: str,
    rating: int,
    ts_ms: int,
    helpful: int,
    verified: bool,
    review: int,
    bad: int,
) -> str:
    """One review as a JSON line in the 2023 field order; bad >= 0 breaks it on purpose."""
    r_title = REVIEW_TITLES[review % len(REVIEW_TITLES)]
    text = f"{REVIEW_OPENERS[review // len(REVIEW_TITLES)]}. {item_title}: arrived on time."
    if bad < 0:  # the common case, formatted directly: exactly what json.dumps writes (no escapes needed)
        return (
            f'{{"rating": {rating}.0, "title": "{r_title}", "text": "{text}", "images": [], '
            f'"asin": "{asin}", "parent_asin": "{asin}", "user_id": "{uid}", "timestamp": {ts_ms}, '
            f'"helpful_vote": {helpful}, '
            f'"verified_purchase": {"true" if verified else "false"}}}'
        )
    rec: dict[str, Any] = {
        "rating": float(rating),
        "title": r_title,
        "text": text,
        "images": [],
        "asin": asin,
        "parent_asin": asin,
        "user_id": uid,
        "timestamp": ts_ms,
        "helpful_vote": helpful,
        "verified_purchase": verified,
    }
    if bad == 1:  # missing user_id
        del rec["user_id"]
    elif bad == 2:  # a date string where epoch milliseconds belong
        rec["timestamp"] = datetime.fromtimestamp(rec["timestamp"] // 1000, UTC).strftime("%Y-%m-%d")
    elif bad == 3:  # a unit bug: microseconds written as milliseconds (year ~50,000)
        rec["timestamp"] *= 1000
    line = json.dumps(rec)
    return line[: len(line) // 2] if bad == 0 else line  # 0: the line was cut (invalid JSON)


@contextlib.contextmanager
def _gzip_outputs(out_dir: Path, names: list[str]):
    """Deterministic gzip writers to temp files, renamed into place only if all succeed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmps = {name: out_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}" for name in names}
    raw: list[BinaryIO] = []
    try:
        streams = {}
        for name, tmp in tmps.items():
            f = open(tmp, "wb")  # noqa: SIM115 - closed below
            raw.append(f)
            streams[name] = gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0)
        yield streams
        for s in streams.values():
            s.close()
        for f in raw:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for name, tmp in tmps.items():
            os.replace(tmp, out_dir / name)
    finally:
        for f in raw:
            f.close()
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def generate_synthetic(cfg: SynthConfig, progress: bool = False) -> dict[str, dict[str, int]]:
    """Write the synthetic Amazon-2023-format files of cfg.domains into cfg.out_dir.

    Returns {domain: {"rows": review lines (bad ones included), "bad_rows", "users": distinct
    users, "items": catalogue size, "items_used": items with at least one review}}.
    """
    rng = np.random.default_rng([cfg.seed, 0])
    cat = Catalogue(cfg, rng)
    low = min(5, cfg.n_interactions // cfg.n_users)  # every user gets a few events
    activity = rng.lognormal(0.0, 0.8, size=cfg.n_users)
    counts = low + rng.multinomial(cfg.n_interactions - low * cfg.n_users, activity / activity.sum())
    # chunk of a user = where its first event falls, in units of chunk_rows
    chunk_of = (np.cumsum(counts) - counts) // cfg.chunk_rows
    chunks = np.split(np.arange(cfg.n_users), np.flatnonzero(np.diff(chunk_of)) + 1)

    n_dom = len(cfg.domains)
    stats = {d: {"rows": 0, "bad_rows": 0, "users": 0, "items": cfg.n_items_per_domain} for d in cfg.domains}
    used = np.zeros(len(cat.theme), dtype=bool)
    names = [f"{d}.jsonl.gz" for d in cfg.domains] + [f"meta_{d}.jsonl.gz" for d in cfg.domains]
    with (
        _gzip_outputs(Path(cfg.out_dir), names) as out,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("synth", total=len(chunks))
        for c, users in enumerate(chunks):
            ev = _chunk_events(cfg, cat, users, counts[users], np.random.default_rng([cfg.seed, 1, c]))
            uids = dict(zip(users.tolist(), user_ids(users, cfg.seed), strict=True))
            used[ev["item"]] = True
            for d in range(n_dom):
                idx = np.flatnonzero(ev["domain"] == d)
                stats[cfg.domains[d]]["users"] += len(np.unique(ev["user"][idx]))
                stats[cfg.domains[d]]["bad_rows"] += int((ev["bad"][idx] >= 0).sum())
                stats[cfg.domains[d]]["rows"] += len(idx)
                cols = [
                    ev[k][idx].tolist() for k in ("rating", "ts_ms", "helpful", "verified", "review", "bad")
                ]
                lines = [
                    _review_line(uids[u], cat.ids[j], cat.titles[j], *rest)
                    for u, j, *rest in zip(
                        ev["user"][idx].tolist(), ev["item"][idx].tolist(), *cols, strict=True
                    )
                ]
                if lines:
                    out[f"{cfg.domains[d]}.jsonl.gz"].write(("\n".join(lines) + "\n").encode())
            bar.advance(task)
        for d, domain in enumerate(cfg.domains):
            items = range(d * cfg.n_items_per_domain, (d + 1) * cfg.n_items_per_domain)
            for start in range(items.start, items.stop, cfg.chunk_rows):
                lines = (cat.meta_line(j) for j in range(start, min(start + cfg.chunk_rows, items.stop)))
                out[f"meta_{domain}.jsonl.gz"].write("".join(lines).encode())
            stats[domain]["items_used"] = int(
                used[d * cfg.n_items_per_domain : (d + 1) * cfg.n_items_per_domain].sum()
            )
    return stats


def ensure_synthetic(out_dir: Path, cfg: SynthConfig) -> bool:
    """Generate the synthetic logs into `out_dir` unless they are there for this exact config.

    A marker with the config's fingerprint is written after the files, so an interrupted
    generation is redone. Returns True when files were (re)generated.
    """
    target = cfg.model_copy(update={"out_dir": Path(out_dir)})
    marker = Path(out_dir) / "_synth.json"
    stamp = json.dumps({"synth": target.fingerprint()})
    if marker.is_file() and marker.read_text() == stamp:
        return False
    generate_synthetic(target)
    atomic_write_text(marker, stamp)
    return True
