"""Corpus stage: silver behaviour sequences -> gold prompt corpora (PAPER.md §1 and §2).

Reads silver.events (train and valid events of `domains.pretrain` only), silver.mixed and
silver.items; writes gold.corpus (partition kind=domain|mixed) and gold.probe.

- Domain documents: each user's TRAIN events in one pretrain domain, in position order; mixed
  documents: each user's silver.mixed sequence (train events of pretrain domains, merged by time).
  Downstream domains, valid and test events never reach gold.corpus.
- Windowing (`window_bounds`): windows of `corpus.max_items` items starting every
  `max_items - window_overlap` items; the last window ends at the sequence's last item.
- Mixing: `corpus.domain_weights` sets each domain's share of the domain documents' characters,
  `corpus.mix_ratio` the mixed documents' share of all characters. The over-represented part is
  subsampled (never duplicated), keeping documents in seeded-hash order until the character target
  is reached; a document's rank depends only on (seed, doc_id), not on the other documents.
- gold.probe: one document per (user, pretrain domain): the user's last `max_items - 1` train items
  and then the valid item as the final line (so at most `max_items` items, like a corpus window), a
  seeded sample of `corpus.probe_docs`; the CPT perplexity probe. The valid event occurs nowhere else.
- corpus.shuffle_lines (the experiment's token-matched control, `shuffle_lines`): the kept
  documents' item lines dealt out again at random within each domain and within the mixed
  documents: the same text and tokens, no behaviour order. gold.probe is never shuffled.
- Catalogue guard (`catalogue_overlap`): a downstream domain whose item titles also name pretrain
  items beyond corpus.max_downstream_overlap fails the stage; the overlap is in the statistics.
- Render cache: a pretrain domain's candidate documents and probe candidates depend only on its
  silver.events partition, its items' text and the rendering settings (`RENDERED`); they are kept
  under cache/corpus/<domain>/<key> and reused while those are unchanged, so a refresh renders only
  the changed domains' documents (the mixed documents and the selection are redone when any
  pretrain input changed).
- Unchanged inputs (`inputs_key`: every pretrain domain's render key, silver.mixed's fingerprint,
  the corpus and domain settings, the code): gold.corpus and gold.probe stay as they are, only the
  catalogue guard runs again. A refresh of a downstream domain changes no byte of the corpus.
Rows are sorted by doc_id, so equal inputs and seed give byte-identical Parquet files.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from rich.progress import Progress

from cprec_core.artifacts import (
    ArtifactError,
    DatasetWriter,
    Manifest,
    atomic_dir,
    config_hash,
    finish_manifest,
    identity,
    parquet_files,
    partition_fingerprints,
    read_manifest,
    read_table,
    update_extra,
    verify,
    write_table,
)
from cprec_core.config import Config, ConfigError, CorpusConfig
from cprec_core.errors import UserError
from cprec_core.locks import holds_run_lock
from cprec_core.paths import cache_dir, scratch_dir
from cprec_core.prompts import (
    MIXED_HEADER,
    domain_header,
    domain_label,
    item_text,
    mixed_item_text,
    number_lines,
    split_document,
)
from cprec_core.schema import (
    CORPUS_SCHEMA,
    GOLD_CORPUS,
    GOLD_PROBE,
    SILVER_EVENTS,
    SILVER_ITEMS,
    SILVER_MIXED,
)

log = logging.getLogger(__name__)
# item lines rendered per batch of whole users (overlapping windows repeat lines): bounds memory and
# keeps a batch's text far below Arrow's 2 GiB string limit
RENDER_CHUNK_LINES = 150_000
RENDERED = {"max_items", "window_overlap", "max_title_chars", "probe_docs", "seed"}  # a render's settings


class CorpusError(UserError, ValueError):
    """Silver inputs that break the corpus stage's contract, or a corpus that would be empty."""


def doc_priority(seed: int, doc_id: str) -> int:
    """Seeded pseudo-random rank of a document: lower ranks are kept first when subsampling."""
    digest = hashlib.blake2b(f"{seed}\x1f{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def priorities(seed: int, doc_ids: Sequence[str]) -> np.ndarray:
    """`doc_priority` of each document."""
    return np.fromiter((doc_priority(seed, d) for d in doc_ids), dtype=np.uint64, count=len(doc_ids))


def select_by_chars(priority: np.ndarray, chars: np.ndarray, target: float) -> np.ndarray:
    """Boolean mask of the documents kept to reach `target` characters.

    Documents are taken in `priority` order (`priorities`); the number taken is the one whose
    character total is closest to `target` (all of them when target >= the total).
    """
    chars = np.asarray(chars, dtype=np.int64)
    if target >= chars.sum():
        return np.ones(len(chars), dtype=bool)
    order = np.argsort(priority, kind="stable")
    cum = np.cumsum(chars[order])
    k = int(np.searchsorted(cum, target, side="right"))  # documents whose running total <= target
    below = cum[k - 1] if k else 0
    if k < len(cum) and cum[k] - target < target - below:
        k += 1
    mask = np.zeros(len(chars), dtype=bool)
    mask[order[:k]] = True
    return mask


@dataclass
class _Group:
    """The candidate documents of one domain (or of the mixed sequences), spilled to Parquet."""

    kind: str  # domain | mixed
    name: str  # the domain, or "mixed"
    spill: Path
    priority: np.ndarray
    chars: np.ndarray
    n_items: np.ndarray
    keep: np.ndarray  # which documents go to gold.corpus; all until selection


def _user_bounds(user_ids: pa.ChunkedArray) -> np.ndarray:
    """Offsets where each user's run starts, plus the total length (input sorted by user)."""
    u = user_ids.combine_chunks()
    if len(u) == 0:
        return np.array([0], dtype=np.int64)
    change = pc.not_equal(u[1:], u[:-1]).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.flatnonzero(change) + 1, [len(u)]]).astype(np.int64)


def _docs_table(
    doc_ids: list[str],
    user_ids: list[str],
    kind: str,
    domains: list[list[str]],
    n_items: list[int],
    texts: list[str],
) -> pa.Table:
    arrays = [doc_ids, user_ids, [kind] * len(doc_ids), domains, n_items, texts]
    return pa.Table.from_arrays(
        [pa.array(a, type=f.type) for a, f in zip(arrays, CORPUS_SCHEMA, strict=True)], schema=CORPUS_SCHEMA
    )


def window_bounds(lengths: np.ndarray, size: int, overlap: int) -> tuple[np.ndarray, ...]:
    """The half-open windows over sequences of `lengths` items: per window, (its sequence, its number
    in the sequence, start, end within the sequence), in sequence then window order.

    Window k of a sequence of n items starts at k * (size - overlap) and holds `size` items, except
    the last, which ends at n; there are 1 + ceil((n - size) / (size - overlap)) windows when n > size,
    one when 0 < n <= size, none when n = 0. Consecutive windows share exactly `overlap` items and
    every item is covered.
    """
    if not 0 <= overlap < size:
        raise ValueError(f"window overlap {overlap} must be in [0, size={size})")
    lengths = np.asarray(lengths, dtype=np.int64)
    stride = size - overlap
    count = np.where(lengths > 0, 1 + np.maximum(0, -(-(lengths - size) // stride)), 0)
    sequence = np.repeat(np.arange(len(lengths)), count)
    number = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    start = number * stride
    return sequence, number, start, np.minimum(start + size, lengths[sequence])


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """starts[0], starts[0] + 1, ... (lengths[0] values), then the same from starts[1], ..."""
    first = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) - np.repeat(first - starts, lengths)


def _window_domains(domain: pa.ChunkedArray, rows: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Per window (its `lengths` lines are the events `rows`), the sorted distinct domains of its lines."""
    codes = pc.dictionary_encode(domain.combine_chunks())
    names = codes.dictionary.to_numpy(zero_copy_only=False)
    rank = np.argsort(np.argsort(names, kind="stable"), kind="stable")  # code -> place in sorted names
    of_line = rank[codes.indices.to_numpy(zero_copy_only=False)[rows]]
    window = np.repeat(np.arange(len(lengths)), lengths)
    pairs = np.unique(window * len(names) + of_line)  # window-major, names in order within a window
    offsets = np.concatenate([[0], np.cumsum(np.bincount(pairs // len(names), minlength=len(lengths)))])
    values = pa.array(np.sort(names)[pairs % len(names)], pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _window_docs(seq: pa.Table, kind: str, name: str, c: CorpusConfig) -> Iterator[pa.Table]:
    """Render windowed documents from a sequence table sorted by (user_id, position).

    `seq` has columns user_id, domain and line (the rendered item text of its kind). Yields one
    table per ~RENDER_CHUNK_LINES item lines (whole users), built column-wise in Arrow: each document is
    `number_lines(header, its window's lines)`, its id `<prefix><user>:<window, 5 digits>`.
    """
    header = MIXED_HEADER if kind == "mixed" else domain_header(name)
    prefix = "mixed:" if kind == "mixed" else f"domain:{name}:"
    bounds = _user_bounds(seq["user_id"])
    of_user, of_number, of_start, of_end = window_bounds(np.diff(bounds), c.max_items, c.window_overlap)
    per_user = np.bincount(of_user, weights=of_end - of_start, minlength=len(bounds) - 1)
    lines = np.concatenate([[0], np.cumsum(per_user)])  # item lines rendered before each user
    lo = 0
    while lo < len(bounds) - 1:
        last_fitting = int(np.searchsorted(lines, lines[lo] + RENDER_CHUNK_LINES, side="right")) - 1
        hi = max(lo + 1, last_fitting)
        part = seq.slice(bounds[lo], bounds[hi] - bounds[lo])
        user_start = bounds[lo:hi] - bounds[lo]
        mine = slice(*np.searchsorted(of_user, [lo, hi]))  # the windows of users lo..hi-1
        user, number, start, end = of_user[mine] - lo, of_number[mine], of_start[mine], of_end[mine]
        lengths = end - start
        rows = _ragged_arange(user_start[user] + start, lengths)  # each window's events, in order
        line_no = _ragged_arange(np.ones_like(lengths), lengths)
        numbered = pc.binary_join_element_wise(
            pa.array(line_no).cast(pa.string()), part["line"].take(rows), ". "
        )
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())
        body = pc.binary_join(pa.ListArray.from_arrays(offsets, numbered.combine_chunks()), "\n")
        users = part["user_id"].take(user_start[user])
        ids = pc.binary_join_element_wise(
            pc.binary_join_element_wise(prefix, users, ""),
            pc.utf8_lpad(pa.array(number).cast(pa.string()), 5, "0"),
            ":",
        )
        columns = {
            "doc_id": ids,
            "user_id": users,
            "kind": pa.array([kind] * len(lengths), pa.string()),
            "domains": _window_domains(part["domain"], rows, lengths),
            "n_items": pa.array(lengths, pa.int32()),
            "text": pc.binary_join_element_wise(header, body, "\n"),
        }
        yield pa.Table.from_pydict(columns, schema=CORPUS_SCHEMA)
        lo = hi


def _probe_docs(seq: pa.Table, domain: str, c: CorpusConfig) -> tuple[pa.Table, np.ndarray]:
    """The `probe_docs` lowest-priority probe documents of one domain, with their priorities.

    `seq` holds the domain's train and valid events with their lines, sorted by (user, position).
    """
    bounds = _user_bounds(seq["user_id"])
    valid_rows = np.flatnonzero(pc.equal(seq["split"], "valid").to_numpy(zero_copy_only=False))
    users = seq["user_id"].to_pylist()
    starts = bounds[np.searchsorted(bounds, valid_rows, side="right") - 1]
    ends = bounds[np.searchsorted(bounds, valid_rows, side="right")]
    if np.any(ends != valid_rows + 1):
        v = int(valid_rows[np.flatnonzero(ends != valid_rows + 1)[0]])
        raise CorpusError(
            f"silver.events domain={domain} user_id={users[v]!r}: events follow the valid event; "
            "leave-one-out needs train < valid < test (rerun behaviors)"
        )
    has_train = valid_rows > starts
    valid_rows, starts = valid_rows[has_train], starts[has_train]
    doc_ids = [f"probe:{domain}:{users[v]}" for v in valid_rows.tolist()]
    priority = priorities(c.seed, doc_ids)
    pick = np.sort(np.argsort(priority, kind="stable")[: c.probe_docs])
    lines = seq["line"].to_pylist()
    header = domain_header(domain)
    ids, texts, n_items = [], [], []
    for i in pick.tolist():
        v = int(valid_rows[i])
        s = max(int(starts[i]), v + 1 - c.max_items)  # max_items items in all, like a window
        ids.append(doc_ids[i])
        texts.append(number_lines(header, lines[s : v + 1]))
        n_items.append(v + 1 - s)
    users_picked = [users[int(valid_rows[i])] for i in pick.tolist()]
    table = _docs_table(ids, users_picked, "domain", [[domain]] * len(ids), n_items, texts)
    return table, priority[pick]


def _item_lines(items: pa.Table, domain: str, max_chars: int) -> pa.Table:
    """(domain, item_id) -> (line, mixed_line): the rendered text of every item of one domain."""
    t = items.filter(pc.equal(items["domain"], domain))
    if pc.count_distinct(t["item_id"]).as_py() != t.num_rows:
        raise CorpusError(f"silver.items domain={domain}: item_id is not unique (rerun behaviors)")
    titles, cats = t["title"].to_pylist(), t["category"].to_pylist()
    return pa.table(
        {
            "domain": t["domain"],
            "item_id": t["item_id"],
            "line": pa.array(
                [item_text(a, b, max_chars) for a, b in zip(titles, cats, strict=True)], pa.string()
            ),
            "mixed_line": pa.array(
                [mixed_item_text(domain, a, b, max_chars) for a, b in zip(titles, cats, strict=True)],
                pa.string(),
            ),
        }
    )


def _key(table: pa.Table, keys: tuple[str, ...]) -> pa.Array:
    """One string per row from its `keys` columns (joined by a unit separator when more than one)."""
    columns = [table[k].combine_chunks() for k in keys]
    return columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "\x1f")


def _by_user(seq: pa.Table) -> pa.Table:
    """`seq` in (user_id, position) order: as it is when already so (silver is written so), else sorted."""
    if seq.num_rows > 1:
        user, position = seq["user_id"].combine_chunks(), seq["position"].combine_chunks()
        u0, u1, p0, p1 = user[:-1], user[1:], position[:-1], position[1:]
        ordered = pc.or_(pc.greater(u1, u0), pc.and_(pc.equal(u1, u0), pc.greater(p1, p0)))
        if not pc.all(ordered).as_py():
            return seq.sort_by([("user_id", "ascending"), ("position", "ascending")])
    return seq


def _attach_lines(
    seq: pa.Table, lines: pa.Table, column: str, keys: tuple[str, ...], source: str
) -> pa.Table:
    """Add the items' `column` text as `line` (items found by `keys`, a hash lookup that keeps the
    rows' order), in (user_id, position) order; every item must exist."""
    at = pc.index_in(_key(seq, keys), value_set=_key(lines, keys))
    missing = pc.is_null(at)
    if pc.any(missing).as_py():
        row = seq.filter(missing).slice(0, 1).to_pylist()[0]
        raise CorpusError(
            f"{source} domain={row['domain']} user_id={row['user_id']!r} position={row['position']}: "
            f"item_id {row['item_id']!r} is not in silver.items"
        )
    return _by_user(seq.append_column("line", lines[column].take(at)))


def _check_mixed_is_train(mixed: pa.Table, train: pa.Table, domain: str) -> None:
    """Leakage guard: every silver.mixed event must be a train event of silver.events."""
    keys = ["user_id", "item_id", "ts"]
    leaked = mixed.join(train.select(keys), keys=keys, join_type="left anti")
    if leaked.num_rows:
        row = leaked.sort_by([("user_id", "ascending"), ("position", "ascending")]).slice(0, 1).to_pylist()[0]
        raise CorpusError(
            f"silver.mixed user_id={row['user_id']!r} position={row['position']}: event (domain={domain}, "
            f"item_id={row['item_id']!r}, ts={row['ts']}) is not a train event in silver.events; "
            "valid/test events must never reach the corpus (rerun behaviors)"
        )


INDEX = pa.schema([("priority", pa.uint64()), ("chars", pa.int64()), ("n_items", pa.int64())])


def _index_path(spill: Path) -> Path:
    return spill.with_suffix(".index.parquet")


def _spill(parts: Iterable[pa.Table], path: Path, seed: int) -> None:
    """Write candidate documents to a Parquet file and, beside it, what selection needs of each
    (INDEX, `_index_path`), so that a cached render is not read whole to be selected from."""
    index = [INDEX.empty_table()]
    with pq.ParquetWriter(path, CORPUS_SCHEMA) as writer:
        for docs in parts:
            writer.write_table(docs)
            columns = [
                pa.array(priorities(seed, docs["doc_id"].to_pylist()), pa.uint64()),
                pc.utf8_length(docs["text"]).cast(pa.int64()),
                docs["n_items"].cast(pa.int64()),
            ]
            index.append(pa.Table.from_arrays(columns, schema=INDEX))
    pq.write_table(pa.concat_tables(index), _index_path(path))


def _group(path: Path, kind: str, name: str) -> _Group:
    """The candidate documents of a spill file, with what selection needs (all kept until then)."""
    index = pq.read_table(_index_path(path), schema=INDEX)
    chars = index["chars"].to_numpy()
    keep = np.ones(len(chars), dtype=bool)
    return _Group(kind, name, path, index["priority"].to_numpy(), chars, index["n_items"].to_numpy(), keep)


def _render_domain(events: ds.Dataset, domain: str, lines: pa.Table, c: CorpusConfig, out: Path) -> int:
    """Render one pretrain domain's candidate documents (docs.parquet) and, with corpus.probe_docs,
    its probe candidates with their priorities (probe.parquet) into `out`; return the documents."""
    wanted = (ds.field("domain") == domain) & ds.field("split").isin(["train", "valid"])
    seq = _attach_lines(events.to_table(filter=wanted), lines, "line", ("item_id",), "silver.events")
    train = seq.filter(pc.equal(seq["split"], "train"))
    _spill(_window_docs(train, "domain", domain, c), out / "docs.parquet", c.seed)
    if c.probe_docs:
        probe, priority = _probe_docs(seq, domain, c)
        pq.write_table(
            probe.append_column("priority", pa.array(priority, pa.uint64())), out / "probe.parquet"
        )
    return pq.ParquetFile(out / "docs.parquet").metadata.num_rows


def _render_key(c: CorpusConfig, domain: str, lines: pa.Table, events_fingerprint: str) -> str:
    """What one domain's rendered documents depend on: its silver.events partition, its items'
    text, the rendering settings and the code."""
    settings = {"corpus": c.model_dump(mode="json", include=RENDERED), "domain": domain}
    text = config_hash(lines["item_id"].to_pylist(), lines["line"].to_pylist())
    return identity(settings, {"events": events_fingerprint, "item_text": text})


def _rendered(
    cfg: Config, events: ds.Dataset, domain: str, lines: pa.Table, key: str
) -> tuple[_Group, tuple[pa.Table, np.ndarray] | None]:
    """One domain's candidate documents and probe candidates: from the render cache when its
    inputs and settings are unchanged (`key`, `_render_key`), else rendered into it (the domain's
    older entries removed)."""
    c = cfg.corpus
    where = cache_dir(cfg, "corpus") / domain
    entry = where / key
    try:
        hit = verify(entry).config_hash == key
    except ArtifactError:
        hit = False
    if not hit:
        with atomic_dir(entry) as tmp:
            rows = _render_domain(events, domain, lines, c, tmp)
            finish_manifest(tmp, "corpus.render", rows, CORPUS_SCHEMA, key, {"domain": domain})
        for old in where.iterdir():
            if old.name != key and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    probe = None
    if c.probe_docs:
        table = pq.read_table(entry / "probe.parquet")
        probe = table.drop_columns(["priority"]), table["priority"].to_numpy()
    return _group(entry / "docs.parquet", "domain", domain), probe


def _kept_docs(g: _Group) -> pa.Table:
    """The selected documents of a group, read back from its scratch file, sorted by doc_id, in
    one chunk (so the Parquet bytes written do not depend on how the render was cut)."""
    parts, offset = [CORPUS_SCHEMA.empty_table()], 0
    for batch in pq.ParquetFile(g.spill).iter_batches(batch_size=64 * 1024):
        keep = g.keep[offset : offset + len(batch)]
        table = pa.Table.from_batches([batch])
        parts.append(table if keep.all() else table.filter(pa.array(keep)))
        offset += len(batch)
    docs = pa.concat_tables(parts)
    if _sorted_ids(docs["doc_id"]):
        return docs.combine_chunks()  # a copy, but sequential: sorting would gather every text
    return docs.sort_by([("doc_id", "ascending")])


def _sorted_ids(ids: pa.ChunkedArray) -> bool:
    """Whether `ids` ascend strictly. Renders come in user order with zero-padded window numbers, so
    they usually do, and sorting them again would copy every document's text; a user id with a
    character below ':' can break the order, hence the check."""
    flat = ids.combine_chunks()
    return len(flat) < 2 or pc.all(pc.less(flat[:-1], flat[1:])).as_py()


def shuffle_lines(docs: pa.Table, seed: int, group: str, domain_of_label: dict[str, str]) -> pa.Table:
    """The token-matched control: every document keeps its header and its number of lines, but the
    item lines of the whole group (one domain's documents, or the mixed ones) are dealt out again
    in a seeded random order. The multiset of lines, and so the text and the token budget, stay;
    which items follow which (the behaviour) is gone. Mixed documents get their `domains` again
    from the lines they now hold."""
    parsed = [split_document(t) for t in docs["text"].to_pylist()]
    pool = [line for _, lines in parsed for line in lines]
    rng = np.random.default_rng([seed, zlib.crc32(group.encode())])
    dealt = [pool[i] for i in rng.permutation(len(pool))]
    texts, domains, at = [], [], 0
    for header, lines in parsed:
        mine = dealt[at : at + len(lines)]
        at += len(lines)
        texts.append(number_lines(header, mine))
        if domain_of_label:
            domains.append(sorted({domain_of_label[line[1 : line.index("] ")]] for line in mine}))
    docs = docs.set_column(docs.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
    if domain_of_label:
        field = CORPUS_SCHEMA.field("domains")
        docs = docs.set_column(docs.schema.get_field_index("domains"), field, pa.array(domains, field.type))
    return docs


def _title_key(title: str | None) -> str:
    """A title as compared across catalogues: lower case, letters and digits, single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+", (title or "").lower()))


def catalogue_overlap(
    items: pa.Table, pretrain: list[str], downstream: list[str]
) -> dict[str, dict[str, Any]]:
    """Per downstream domain: its items, and how many of their titles also name a pretrain item."""
    domains, titles = items["domain"].to_pylist(), items["title"].to_pylist()
    seen = {_title_key(t) for d, t in zip(domains, titles, strict=True) if d in pretrain} - {""}
    out: dict[str, dict[str, Any]] = {}
    for domain in downstream:
        keys = [_title_key(t) for d, t in zip(domains, titles, strict=True) if d == domain]
        shared = sum(k in seen for k in keys)
        out[domain] = {"items": len(keys), "titles_in_pretrain": shared, "share": shared / max(1, len(keys))}
    return out


def _check_weights(c: CorpusConfig, pretrain: list[str]) -> None:
    if isinstance(c.domain_weights, dict):
        unknown = sorted(set(c.domain_weights) - set(pretrain))
        missing = sorted(set(pretrain) - set(c.domain_weights))
        if unknown or missing:
            raise ConfigError(
                f"corpus.domain_weights: keys must be exactly domains.pretrain {sorted(pretrain)} "
                f"(unknown {unknown}, missing {missing}; give 0 to leave a domain out)"
            )


def _weight_targets(c: CorpusConfig, avail: dict[str, int], warn: Callable[[str], None]) -> dict[str, float]:
    """Character target per domain from corpus.domain_weights (largest totals the data allow)."""
    if c.domain_weights == "proportional":
        return {d: float(n) for d, n in avail.items()}
    weights = c.domain_weights
    for d, w in sorted(weights.items()):
        if w > 0 and avail.get(d, 0) == 0:
            warn(f"corpus.domain_weights.{d}={w}: domain {d} has no documents; the others keep their ratios")
    usable = {d: w for d, w in weights.items() if w > 0 and avail.get(d, 0) > 0}
    if not usable:
        return {d: 0.0 for d in avail}
    scale = min(avail[d] / w for d, w in usable.items())
    return {d: usable.get(d, 0.0) * scale for d in avail}


def _plan_and_select(
    c: CorpusConfig, domain_groups: list[_Group], mixed: _Group, warn: Callable[[str], None]
) -> None:
    """Set `keep` on every group so that weights and mix ratio are met by subsampling only."""
    r = c.mix_ratio
    targets = _weight_targets(c, {g.name: int(g.chars.sum()) for g in domain_groups}, warn)
    d_total, m_total = sum(targets.values()), float(mixed.chars.sum())
    if r == 1:
        targets = dict.fromkeys(targets, 0.0)
    elif 0 < r < 1 and m_total == 0:
        warn(
            f"corpus.mix_ratio={r} asks for mixed documents but silver.mixed yields none "
            "(no user active in >= 2 pretrain domains): the corpus is domain-only"
        )
    elif 0 < r < 1 and d_total == 0:
        warn(f"corpus.mix_ratio={r} asks for domain documents but there are none: the corpus is mixed-only")
    elif 0 < r < 1 and m_total / (m_total + d_total) < r:  # domain documents over-represented
        factor = (1 - r) / r * m_total / d_total
        targets = {d: t * factor for d, t in targets.items()}
    for g in domain_groups:
        g.keep = select_by_chars(g.priority, g.chars, targets[g.name])
    d_kept = sum(int(g.chars[g.keep].sum()) for g in domain_groups)
    if r == 0:
        m_target = 0.0
    elif r == 1 or d_kept == 0:
        m_target = m_total
    else:
        m_target = min(m_total, r / (1 - r) * d_kept)
    mixed.keep = select_by_chars(mixed.priority, mixed.chars, m_target)


def _stats(c: CorpusConfig, domain_groups: list[_Group], mixed: _Group) -> dict[str, Any]:
    def per_kind(count: Callable[[_Group], int]) -> dict[str, Any]:
        return {"domain": {g.name: count(g) for g in domain_groups}, "mixed": count(mixed)}

    docs = per_kind(lambda g: int(g.keep.sum()))
    chars = per_kind(lambda g: int(g.chars[g.keep].sum()))
    items = per_kind(lambda g: int(g.n_items[g.keep].sum()))
    d_docs, d_chars, d_items = (sum(x["domain"].values()) for x in (docs, chars, items))
    total_chars = d_chars + chars["mixed"]
    return {
        "documents": docs,
        "characters": chars,
        "documents_available": per_kind(lambda g: len(g.chars)),
        "characters_available": per_kind(lambda g: int(g.chars.sum())),
        "documents_total": d_docs + docs["mixed"],
        "characters_total": total_chars,
        "mean_items_per_doc": {
            "domain": d_items / d_docs if d_docs else 0.0,
            "mixed": items["mixed"] / docs["mixed"] if docs["mixed"] else 0.0,
        },
        "domain_weights_requested": c.domain_weights,
        "domain_char_share": {g: n / d_chars if d_chars else 0.0 for g, n in chars["domain"].items()},
        "mix_ratio_requested": c.mix_ratio,
        "mix_ratio_achieved": chars["mixed"] / total_chars if total_chars else 0.0,
    }


@holds_run_lock
def build_corpus(cfg: Config, progress: bool = False) -> dict[str, Any]:
    """Build gold.corpus and gold.probe from the silver sequences; return the corpus statistics.

    The returned dict (also stored in gold.corpus's manifest `extra`) holds documents and
    characters per kind and domain (kept and available), mean items per document, the requested
    and achieved mix ratio, probe counts, warnings, and both artifacts' fingerprints.
    """
    c, root = cfg.corpus, cfg.root
    pretrain = sorted(cfg.domains.pretrain)
    if not pretrain:
        raise ConfigError("domains.pretrain is empty: the corpus needs at least one pretrain domain")
    _check_weights(c, pretrain)
    warnings: list[str] = []

    def warn(msg: str) -> None:
        log.warning(msg)
        warnings.append(msg)

    items = read_table(SILVER_ITEMS, root)
    overlap = catalogue_overlap(items, pretrain, list(cfg.domains.downstream))
    for domain, o in overlap.items():
        if o["share"] > c.max_downstream_overlap:
            raise CorpusError(
                f"downstream domain {domain}: {o['titles_in_pretrain']:,} of its {o['items']:,} item titles "
                f"({o['share']:.1%}) also name items of the pretrain domains {pretrain}, above "
                f"corpus.max_downstream_overlap={c.max_downstream_overlap}: CPT would read the unseen "
                "domain's catalogue (choose other domains, or raise the limit knowingly)"
            )
    events = ds.dataset(parquet_files(SILVER_EVENTS, root), schema=SILVER_EVENTS.schema, format="parquet")
    mixed_ds = ds.dataset(parquet_files(SILVER_MIXED, root), schema=SILVER_MIXED.schema, format="parquet")
    stray = sorted(set(mixed_ds.to_table(columns=["domain"])["domain"].unique().to_pylist()) - set(pretrain))
    if stray:
        raise CorpusError(
            f"silver.mixed holds domains {stray} that are not in domains.pretrain {pretrain}: "
            "only pretrain train events may reach the corpus (rerun behaviors with this config)"
        )
    partitions = partition_fingerprints(read_manifest(SILVER_EVENTS, root), "domain")
    lines = {d: _item_lines(items, d, c.max_title_chars) for d in pretrain}
    render_keys = {d: _render_key(c, d, lines[d], partitions.get(d, "missing")) for d in pretrain}
    inputs_key = identity(
        {"corpus": c.model_dump(mode="json"), "domains": cfg.domains.model_dump(mode="json")},
        {"renders": config_hash(render_keys), "mixed": read_manifest(SILVER_MIXED, root).fingerprint},
    )
    kept = _kept_corpus(cfg, inputs_key, overlap)
    if kept is not None:
        log.info("corpus: inputs unchanged since gold.corpus was built: kept as it is")
        return kept
    scratch_dir(root).mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="corpus-", dir=scratch_dir(root)) as tmp_dir,
        Progress(disable=not progress, transient=True) as bar,
    ):
        tmp = Path(tmp_dir)
        task = bar.add_task("corpus: render", total=len(pretrain) + 2)
        domain_groups, probes = [], []
        mixed_events = mixed_ds.to_table()  # in its (user_id, position) order
        for domain in pretrain:
            bar.update(task, description=f"corpus: {domain}")
            group, probe = _rendered(cfg, events, domain, lines[domain], render_keys[domain])
            domain_groups.append(group)
            if probe is not None:
                probes.append(probe)
            wanted = (ds.field("domain") == domain) & (ds.field("split") == "train")
            train = events.to_table(columns=["user_id", "item_id", "ts"], filter=wanted)
            if train.num_rows == 0:
                warn(f"domains.pretrain: {domain} has no train events in silver.events")
            of_domain = pc.equal(mixed_events["domain"], domain)
            _check_mixed_is_train(mixed_events.filter(of_domain), train, domain)
            bar.advance(task)
        bar.update(task, description="corpus: mixed")
        by_item = ("domain", "item_id")  # an item id is unique within its domain only
        mixed_seq = _attach_lines(
            mixed_events, pa.concat_tables(lines.values()), "mixed_line", by_item, "silver.mixed"
        )
        _spill(_window_docs(mixed_seq, "mixed", "mixed", c), tmp / "mixed.parquet", c.seed)
        mixed = _group(tmp / "mixed.parquet", "mixed", "mixed")
        bar.advance(task)

        _plan_and_select(c, domain_groups, mixed, warn)
        stats = _stats(c, domain_groups, mixed)
        if stats["documents_total"] == 0:
            raise CorpusError(
                f"the corpus would be empty: corpus.mix_ratio={c.mix_ratio}, domain documents available "
                f"{sum(stats['documents_available']['domain'].values())}, mixed documents available "
                f"{stats['documents_available']['mixed']} (pretrain domains {pretrain})"
            )
        probe = _write_probe(cfg, probes, inputs_key)
        stats.update(
            inputs_key=inputs_key,
            probe_documents=probe.rows,
            warnings=warnings,
            shuffled_lines=c.shuffle_lines,
            catalogue_overlap=overlap,
        )
        bar.update(task, description="corpus: write")
        labels = {domain_label(d): d for d in pretrain}
        with DatasetWriter(GOLD_CORPUS, root, config_hash(c, cfg.domains)) as writer:
            for g in [*domain_groups, mixed]:
                docs = _kept_docs(g)
                if c.shuffle_lines:
                    docs = shuffle_lines(docs, c.seed, g.name, labels if g.kind == "mixed" else {})
                writer.write(docs)
            writer.extra.update(stats)
        bar.advance(task)
    assert writer.manifest is not None
    stats.update(corpus_fingerprint=writer.manifest.fingerprint, probe_fingerprint=probe.fingerprint)
    log.info(
        "corpus: %d documents, %d characters, mix ratio %.3f (requested %.3f), %d probe documents",
        stats["documents_total"],
        stats["characters_total"],
        stats["mix_ratio_achieved"],
        c.mix_ratio,
        probe.rows,
    )
    return stats


def _kept_corpus(cfg: Config, inputs_key: str, overlap: dict[str, Any]) -> dict[str, Any] | None:
    """The statistics of gold.corpus and gold.probe on disk when both were built from `inputs_key`
    (their files kept; the catalogue overlap, which reads downstream items, updated in the
    manifest), else None."""
    try:
        corpus, probe = (verify(a.path(cfg.root)) for a in (GOLD_CORPUS, GOLD_PROBE))
    except ArtifactError:
        return None
    if corpus.extra.get("inputs_key") != inputs_key or probe.extra.get("inputs_key") != inputs_key:
        return None
    if corpus.extra.get("catalogue_overlap") != overlap:
        corpus = update_extra(GOLD_CORPUS.path(cfg.root), {**corpus.extra, "catalogue_overlap": overlap})
    return {**corpus.extra, "corpus_fingerprint": corpus.fingerprint, "probe_fingerprint": probe.fingerprint}


def _write_probe(cfg: Config, probes: list[tuple[pa.Table, np.ndarray]], inputs_key: str) -> Manifest:
    """Keep the `probe_docs` lowest-priority candidates over all domains; write gold.probe sorted."""
    c = cfg.corpus
    if probes:
        table = pa.concat_tables([t for t, _ in probes])
        priority = np.concatenate([p for _, p in probes])
        table = table.take(np.sort(np.argsort(priority, kind="stable")[: c.probe_docs]))
    else:
        table = CORPUS_SCHEMA.empty_table()
    table = table.sort_by([("doc_id", "ascending")])
    extra = {"probe_documents": table.num_rows, "probe_docs_requested": c.probe_docs}
    extra["inputs_key"] = inputs_key
    return write_table(GOLD_PROBE, cfg.root, table, config_hash(c, cfg.domains), extra)
