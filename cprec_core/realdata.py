"""Convert the research-format Amazon sets in shared/data to cprec's generic raw layout.

Reads: four folders of `shared/data/` (see its README.md for formats, counts and terms; the data
is research-only and is never copied into the repository):
  amazon2018_urllm_arts_office/   → domains Arts and Office (one real cross-domain mixed order)
  amazon2018_llmrank_games6k/     → domain Games
  amazon2018_unisrec_scientific/  → domain Scientific (raw reviewer ids: 708 users shared with URLLM)
  amazon2014_lrd_office/          → domain Office2014 (the only set with real timestamps)
Writes: the generic raw layout read by the `generic` ingest reader, one folder per domain:
  <out>/<Domain>/interactions.parquet  user_id str, item_id str, timestamp int64 s, rating float64 null
  <out>/<Domain>/items.parquet         item_id str, title str, category str null, description str null
Implements: the real-data inputs of PAPER.md §2 (domain and all-domain mixed sequences) and §1
(item text = title + category).

The files are read with ingest's own line reader (plain or .gz, the same decoding and the same
reasons for a broken line) and the RecBole sets with ingest's RecBole reader; unlike ingest, the
conversion is strict: these are fixed research sets, so any broken line stops it with a one-line
error naming file and line instead of going to a quarantine.

Only Office2014 has timestamps. Every other set gives order only, so its events get ingest's
ordinal times (`ingest.common.ordinal_ts` under the default ingest settings). For Arts and Office
the position is the one in the user's *mixed* sequence, on one clock for both domains, so the
behaviors stage's mixed sequences reproduce the real cross-domain order. Users without raw
reviewer ids (Games, Office2014) get a set prefix ("games:", "lrd:") so that their integer ids can
never be mistaken for the same person across sets.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cprec_core.artifacts import atomic_dir
from cprec_core.config import IngestConfig
from cprec_core.ingest import recbole
from cprec_core.ingest.common import FieldMap, IngestError, open_binary, ordinal_ts, text_lines

# The generic raw layout (the contract with the `generic` ingest reader).
GENERIC_INTERACTIONS = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.int64()),  # seconds since epoch, UTC
        ("rating", pa.float64()),  # null: none of these sets keeps ratings
    ]
)
GENERIC_ITEMS = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),  # nullable; the sources give the path as one space-joined string
        ("description", pa.string()),  # nullable
    ]
)

ORDINAL = IngestConfig()  # the ingest settings whose clock (min_ts) the ordinal times follow

URLLM_DIR = "amazon2018_urllm_arts_office"
GAMES_DIR = "amazon2018_llmrank_games6k"
SCIENTIFIC_DIR = "amazon2018_unisrec_scientific"
OFFICE2014_DIR = "amazon2014_lrd_office"
URLLM_SEQUENCE_FILES = ("traindata_new.txt", "testdata_new.txt", "validdata_new.txt")
RECBOLE_INTER_HEADER = ["user_id:token", "item_id_list:token_seq", "item_id:token"]
SCIENTIFIC_ROOT = "Industrial & Scientific"  # first level of every Scientific category path


class RealDataError(IngestError):
    """A source file does not have the format shared/data/README.md describes (names file and line)."""


@dataclass
class DomainTables:
    """One converted domain: its interactions and its item catalogue (generic layout)."""

    interactions: pa.Table
    items: pa.Table


# --------------------------------------------------------------------------- line-level readers


def _require(path: Path) -> None:
    if not path.is_file():
        raise RealDataError(f"{path}: file not found (see shared/data/README.md for the expected files)")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every non-blank line (ingest's reader)."""
    _require(path)
    with open_binary(path) as f:
        for n, text, error, raw in text_lines(f):
            if text is not None:
                yield n, text
            elif not _blank(raw):
                raise RealDataError(f"{path.name} line {n}: {error}")


def _blank(raw: bytes | str) -> bool:
    """A blank line (skipped) as opposed to a broken one or a broken stream (whose raw is b"")."""
    return bool(raw) and not raw.strip()


def _int(path: Path, n: int, field: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise RealDataError(f"{path.name} line {n}: field {field}: expected int, got {raw!r}") from None


def _fields(path: Path, n: int, line: str, count: int) -> list[str]:
    parts = line.split("\t")
    if len(parts) != count:
        raise RealDataError(f"{path.name} line {n}: expected {count} tab-separated fields, got {len(parts)}")
    return parts


def _expect_header(path: Path, n: int, line: str, header: list[str]) -> None:
    if n != 1 or line.split("\t") != header:
        raise RealDataError(f"{path.name} line {n}: expected header {'<TAB>'.join(header)!r}, got {line!r}")


def read_id_map(path: Path) -> dict[int, str]:
    """`raw_id<TAB>int` lines (userlist.txt, *.user2index, *.item2index) → {int: raw_id}."""
    out: dict[int, str] = {}
    for n, line in _lines(path):
        raw, idx = _fields(path, n, line, 2)
        i = _int(path, n, "index", idx)
        if i in out:
            raise RealDataError(f"{path.name} line {n}: index {i} appears twice")
        out[i] = raw
    return out


def read_text_file(path: Path, header: list[str]) -> dict[str, str]:
    """`key<TAB>text` lines under a header (Scientific.text, Office.text, Games-6k.item) → {key: text}."""
    out: dict[str, str] = {}
    for n, line in _lines(path):
        if n == 1:
            _expect_header(path, n, line, header)
            continue
        key, text = _fields(path, n, line, 2)
        if key in out:
            raise RealDataError(f"{path.name} line {n}: key {key!r} appears twice")
        out[key] = text.strip()
    return out


def read_recbole_sequences(path: Path) -> dict[int, list[int]]:
    """RecBole `.test.inter` → {user int: full item sequence}; full = history + target (README §1),
    read by ingest's RecBole reader (its sequence form expands a row into its events in order)."""
    first = next(_lines(path), (1, ""))
    _expect_header(path, *first, RECBOLE_INTER_HEADER)
    fields = FieldMap(recbole.NATIVE, "interactions", {}, str(path))
    out: dict[int, list[int]] = {}
    row_of: dict[int, int] = {}
    for rec in recbole.records(path, fields, ORDINAL):
        if rec.value is None and _blank(rec.raw):
            continue
        if rec.value is None:
            raise RealDataError(f"{path.name} line {rec.line}: {rec.error}")
        u = _int(path, rec.line, "user_id", rec.value["user_id"])
        if row_of.setdefault(u, rec.line) != rec.line:
            raise RealDataError(
                f"{path.name} line {rec.line}: user {u} has a second row (expected one per user)"
            )
        out.setdefault(u, []).append(_int(path, rec.line, "item_id", rec.value["item_id"]))
    return out


def _urllm_row(path: Path, n: int, line: str) -> tuple[int, list[tuple[int, int]]]:
    """One C2DSR row `user<TAB>pos_of_last<TAB>item|pos|pos ...` → (user, [(item, pos)])."""
    parts = [p for p in line.split("\t") if p]
    if len(parts) < 3:
        raise RealDataError(f"{path.name} line {n}: expected user, pos_of_last and item tokens")
    user = _int(path, n, "user", parts[0])
    pos_last = _int(path, n, "pos_of_last", parts[1])
    tokens: list[tuple[int, int]] = []
    for tok in parts[2:]:
        pieces = tok.split("|")
        if len(pieces) != 3:
            raise RealDataError(f"{path.name} line {n}: token {tok!r}: expected item|pos|pos")
        item, pos = _int(path, n, "item", pieces[0]), _int(path, n, "pos", pieces[1])
        if tokens and pos != tokens[-1][1] + 1:
            raise RealDataError(
                f"{path.name} line {n}: token {tok!r}: pos {pos} does not follow {tokens[-1][1]}"
            )
        tokens.append((item, pos))
    if tokens[-1][1] != pos_last:
        raise RealDataError(
            f"{path.name} line {n}: pos_of_last {pos_last} != last token's pos {tokens[-1][1]}"
        )
    return user, tokens


def read_urllm_sequences(paths: list[Path]) -> dict[int, list[tuple[int, int]]]:
    """C2DSR/URLLM rows → {user int: [(item int, position in the mixed sequence)]}.

    Every user has two rows sharing their history and differing only in the target (the last item
    of one domain, then of the other). The full sequence is the shared history, then the first
    row's target at pos_of_last, then the second row's target at pos_of_last + 1 (file order: the
    source gives both the same position).
    """
    first: dict[int, tuple[Path, int, list[tuple[int, int]]]] = {}
    out: dict[int, list[tuple[int, int]]] = {}
    for path in paths:
        for n, line in _lines(path):
            user, tokens = _urllm_row(path, n, line)
            if user in out:
                raise RealDataError(f"{path.name} line {n}: user {user} has a third row (expected two)")
            if user not in first:
                first[user] = (path, n, tokens)
                continue
            _, _, prev = first.pop(user)
            if prev[:-1] != tokens[:-1]:
                raise RealDataError(
                    f"{path.name} line {n}: user {user}: history differs from the user's first row "
                    "(the two rows must differ only in the last item)"
                )
            item, pos = tokens[-1]
            out[user] = [*prev, (item, pos + 1)]
    if first:
        user, (path, n, _) = next(iter(first.items()))
        raise RealDataError(
            f"{path.name} line {n}: user {user} has one row (expected two); users with one row: {len(first)}"
        )
    return out


def read_urllm_items(path: Path) -> dict[int, tuple[str, str]]:
    """item_list*.csv (`idBefore,item_title,idAfter,item_attribute`) → {idAfter: (title, attribute)}."""
    _require(path)
    want = ["idBefore", "item_title", "idAfter", "item_attribute"]
    out: dict[int, tuple[str, str]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != want:
            raise RealDataError(f"{path.name} line 1: expected header {','.join(want)!r}, got {header!r}")
        for row in reader:
            n = reader.line_num
            if len(row) != 4:
                raise RealDataError(f"{path.name} line {n}: expected 4 CSV fields, got {len(row)}")
            out[_int(path, n, "idAfter", row[2])] = (row[1].strip(), row[3].strip())
    return out


def read_rechorus_rows(paths: list[Path]) -> list[tuple[int, int, int]]:
    """ReChorus train/dev/test `.csv` (tab-separated: user_id, item_id, time, ...) → rows in file order."""
    rows: list[tuple[int, int, int]] = []
    for path in paths:
        for n, line in _lines(path):
            parts = line.split("\t")
            if n == 1:
                if parts[:3] != ["user_id", "item_id", "time"]:
                    raise RealDataError(
                        f"{path.name} line 1: expected header user_id, item_id, time, got {line!r}"
                    )
                continue
            if len(parts) < 3:
                raise RealDataError(f"{path.name} line {n}: expected user_id, item_id, time")
            rows.append(
                (
                    _int(path, n, "user_id", parts[0]),
                    _int(path, n, "item_id", parts[1]),
                    _int(path, n, "time", parts[2]),
                )
            )
    return rows


def split_title_category_brand(text: str, root: str) -> tuple[str, str | None, str | None]:
    """UniSRec item text `title. category path. brand. ` → (title, category or None, brand or None).

    The category path starts with `root` (the Amazon top category); an empty path shows as `. . `;
    the brand may be missing or contain '. ' itself ("Mr. Heater"). Text without either marker is
    all title.
    """
    text = text.strip().removesuffix(".")
    cut = text.find(f". {root}")
    if cut >= 0:
        category, _, brand = text[cut + 2 :].partition(". ")
        return text[:cut].strip(), category.strip() or None, brand.strip() or None
    if ". . " in text:
        title, _, brand = text.partition(". . ")
        return title.strip(), None, brand.strip() or None
    return text, None, None


# --------------------------------------------------------------------------- table builders


def _interactions(rows: list[tuple[str, str, int]]) -> pa.Table:
    users, items, ts = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "timestamp": pa.array(ts, pa.int64()),
            "rating": pa.nulls(len(rows), pa.float64()),
        },
        schema=GENERIC_INTERACTIONS,
    )


def _items(rows: list[tuple[str, str, str | None, str | None]]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return pa.table(
        {name: pa.array(col, pa.string()) for name, col in zip(GENERIC_ITEMS.names, cols, strict=True)},
        schema=GENERIC_ITEMS,
    )


def _sequence_rows(
    sequences: dict[int, list[int]], user_id: Callable[[int], str], item_id: Callable[[int], str]
) -> list[tuple[str, str, int]]:
    """Order-only sequences → (user, item, ordinal ts) rows, users in index order."""
    return [
        (user_id(u), item_id(i), ordinal_ts(p, ORDINAL))
        for u in sorted(sequences)
        for p, i in enumerate(sequences[u])
    ]


def _lookup(mapping: dict[int, str], path: Path, what: str) -> Callable[[int], str]:
    def get(i: int) -> str:
        if i not in mapping:
            raise RealDataError(f"{path.name}: {what} {i} is used in the sequences but not listed here")
        return mapping[i]

    return get


# --------------------------------------------------------------------------- one converter per set


def convert_urllm(folder: Path) -> dict[str, DomainTables]:
    """URLLM Arts+Office (README §3) → Arts and Office, on one per-user clock (the mixed order)."""
    users_path = folder / "userlist.txt"
    user_of = _lookup(read_id_map(users_path), users_path, "user")
    catalogues = {
        "Arts": ("A", read_urllm_items(folder / "item_listA_F.csv")),
        "Office": ("O", read_urllm_items(folder / "item_listO_AA_F.csv")),
    }
    domain_of = {i: name for name, (_, cat) in catalogues.items() for i in cat}
    rows: dict[str, list[tuple[str, str, int]]] = {name: [] for name in catalogues}
    sequences = read_urllm_sequences([folder / f for f in URLLM_SEQUENCE_FILES])
    for u in sorted(sequences):
        for item, pos in sequences[u]:
            if item not in domain_of:
                raise RealDataError(f"{URLLM_DIR}: user {u}: item {item} is in neither item_list CSV")
            name = domain_of[item]
            rows[name].append((user_of(u), f"{catalogues[name][0]}:{item}", ordinal_ts(pos, ORDINAL)))
    return {
        name: DomainTables(
            _interactions(rows[name]),
            _items(
                [(f"{prefix}:{i}", title, attr or None, None) for i, (title, attr) in sorted(cat.items())]
            ),
        )
        for name, (prefix, cat) in catalogues.items()
    }


def convert_games(folder: Path) -> dict[str, DomainTables]:
    """LLMRank Games-6k (README §6) → Games; integer ids only, so users get the prefix 'games:'."""
    titles = read_text_file(folder / "Games-6k.item", ["item_id:token", "title:token_seq"])
    sequences = read_recbole_sequences(folder / "Games-6k.test.inter")
    known = {int(k) for k in titles}
    for u, seq in sequences.items():
        missing = [i for i in seq if i not in known]
        if missing:
            raise RealDataError(f"Games-6k.item: item {missing[0]} (user {u}) has no row")
    rows = _sequence_rows(sequences, lambda u: f"games:{u}", lambda i: f"G:{i}")
    items = [(f"G:{k}", t, None, None) for k, t in sorted(titles.items(), key=lambda kv: int(kv[0]))]
    return {"Games": DomainTables(_interactions(rows), _items(items))}


def convert_scientific(folder: Path) -> dict[str, DomainTables]:
    """UniSRec Scientific (README §1) → Scientific, with raw reviewer ids and raw asins."""
    users_path, items_path = folder / "Scientific.user2index", folder / "Scientific.item2index"
    asins = read_id_map(items_path)
    texts = read_text_file(folder / "Scientific.text", ["item_id:token", "text:token_seq"])
    sequences = read_recbole_sequences(folder / "Scientific.test.inter")
    rows = _sequence_rows(
        sequences, _lookup(read_id_map(users_path), users_path, "user"), _lookup(asins, items_path, "item")
    )
    items = []
    for i in sorted(asins):
        if asins[i] not in texts:
            raise RealDataError(f"Scientific.text: item {asins[i]} (index {i}) has no text")
        title, category, brand = split_title_category_brand(texts[asins[i]], SCIENTIFIC_ROOT)
        items.append((asins[i], title, category, f"Brand: {brand}." if brand else None))
    return {"Scientific": DomainTables(_interactions(rows), _items(items))}


def convert_office2014(folder: Path) -> dict[str, DomainTables]:
    """LRD Office 2014 (README §5) → Office2014, with real times.

    `time` is at day resolution, so a user's events on one day tie; each gets +k seconds (k = its
    rank on that day in file order: train, dev, test) so the source order, whose last event is the
    test item, survives any tie-breaking downstream.
    """
    items_path = folder / "Office.item2index"
    asin_of = _lookup(read_id_map(items_path), items_path, "item")
    texts = read_text_file(folder / "Office.text", ["id", "text"])
    seen: dict[tuple[int, int], int] = defaultdict(int)
    rows = []
    for u, i, t in read_rechorus_rows([folder / f for f in ("train.csv", "dev.csv", "test.csv")]):
        rows.append((u, asin_of(i), t + seen[(u, t)]))
        seen[(u, t)] += 1
    rows.sort(key=lambda r: (r[0], r[2]))
    # Office.text holds the title, leaf category and brand space-joined: not separable, so all title.
    items = [(asin, text, None, None) for asin, text in sorted(texts.items())]
    return {
        "Office2014": DomainTables(_interactions([(f"lrd:{u}", i, t) for u, i, t in rows]), _items(items))
    }


CONVERTERS: dict[str, Callable[[Path], dict[str, DomainTables]]] = {
    URLLM_DIR: convert_urllm,
    GAMES_DIR: convert_games,
    SCIENTIFIC_DIR: convert_scientific,
    OFFICE2014_DIR: convert_office2014,
}


# --------------------------------------------------------------------------- writing


def domain_counts(tables: DomainTables) -> dict[str, int]:
    """users, items (with events), catalogue (items.parquet rows), interactions, ts range."""
    inter = tables.interactions
    ts = inter["timestamp"]
    return {
        "users": len(inter["user_id"].unique()),
        "items": len(inter["item_id"].unique()),
        "catalogue": tables.items.num_rows,
        "interactions": inter.num_rows,
        "min_ts": pc.min(ts).as_py() if inter.num_rows else 0,
        "max_ts": pc.max(ts).as_py() if inter.num_rows else 0,
    }


def write_domain(out_dir: Path, domain: str, tables: DomainTables) -> None:
    """Write `<out>/<domain>/{interactions,items}.parquet`; the folder appears whole or not at all."""
    with atomic_dir(Path(out_dir) / domain) as tmp:
        pq.write_table(tables.interactions, tmp / "interactions.parquet", compression="zstd")
        pq.write_table(tables.items, tmp / "items.parquet", compression="zstd")


def prepare_realdata(data_dir: Path, out_dir: Path, progress: bool = False) -> dict[str, dict[str, int]]:
    """Convert every set of `data_dir` (shared/data) into the generic layout under `out_dir`.

    Returns {domain: counts} (see `domain_counts`), domains in the order written.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise RealDataError(f"--data {data_dir}: not a directory (expected shared/data with its README.md)")
    steps: Iterable[tuple[str, Callable[[Path], dict[str, DomainTables]]]] = CONVERTERS.items()
    if progress:
        from rich.progress import track

        steps = track(list(steps), description="realdata sets")  # small sets: one tick per set
    counts: dict[str, dict[str, int]] = {}
    for folder, convert in steps:
        for domain, tables in convert(data_dir / folder).items():
            write_domain(out_dir, domain, tables)
            counts[domain] = domain_counts(tables)
    return counts


# Counts on shared/data (`cprec prepare-realdata`, 2026-11-24; ~4.3 s CPU, 3.4-12.5 s wall, 2 shared cores);
# each matches shared/data/README.md's measured numbers:
#   Arts        users   9,577  items 18,127 (catalogue 18,639)  interactions   97,681
#   Office      users   9,565  items 15,298 (catalogue 19,757)  interactions   86,099   (Arts+Office 183,780)
#   Games       users  50,546  items 16,859 (catalogue 16,859)  interactions  440,264
#   Scientific  users   8,442  items  4,385 (catalogue  4,385)  interactions   59,384   (708 in Arts/Office)
#   Office2014  users   4,905  items  2,420 (catalogue  2,420)  interactions   53,258
# Through configs/realdata.yaml: ingest keeps all 743,068 rows (0 quarantined); behaviors' 3-core keeps
# Arts 86,086, Office 75,130, Games 440,248, Scientific 59,384 events; 113,192 mixed rows for 8,984
# users, each mixed sequence an exact subsequence of the URLLM cross-domain order.
