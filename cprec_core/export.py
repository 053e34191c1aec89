"""Export a downstream domain's split as RecBole atomic files, so that any RecBole model trains and
is evaluated on exactly cprec's train / valid / test targets.

Reads silver.events and silver.items of one domain. Writes `<out>/<domain>/` atomically:
- `<domain>.inter`: `user_id:token  item_id:token  timestamp:float`, one row per event, in each
  user's cprec order (time, then behaviors.tie_break). Events that share a timestamp get offsets of
  1/1000 s in that order, so RecBole's time sort (`eval_args.order: TO`), stable or not, cannot
  reorder them, and its leave-one-out (`split: {LS: valid_and_test}`) picks our valid and test;
- `<domain>.item`: `item_id:token  title:token_seq  categories:token_seq`;
- `recbole.yaml`: the RecBole settings that reproduce the split (no RecBole filters: the k-core
  was cprec's; full ranking).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from cprec_core.artifacts import atomic_dir, parquet_files
from cprec_core.errors import UserError
from cprec_core.prompts import clean_text
from cprec_core.schema import SILVER_EVENTS, SILVER_ITEMS

TIE_STEP = 1000  # offsets of 1/TIE_STEP s separate same-time events


class ExportError(UserError, ValueError):
    """The domain cannot be exported; the message names it and why."""


def recbole_yaml(domain: str, data_path: Path) -> str:
    """RecBole 1.2 settings that load the export and split it as cprec did."""
    return "\n".join(
        [
            f"# RecBole settings that reproduce cprec's split of {domain} (leave-one-out in time order).",
            f"data_path: {data_path}",
            f"dataset: {domain}",
            "USER_ID_FIELD: user_id",
            "ITEM_ID_FIELD: item_id",
            "TIME_FIELD: timestamp",
            "load_col: {inter: [user_id, item_id, timestamp], item: [item_id, title, categories]}",
            "user_inter_num_interval: '[0,inf)'   # cprec already applied its k-core",
            "item_inter_num_interval: '[0,inf)'",
            "eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}",
            "",
        ]
    )


def _timestamps(users: list[str], ts: list[int]) -> list[str]:
    """ts with 1/TIE_STEP s offsets for a user's events that share a second, in the given order."""
    out, run = [], 0
    for i, (u, t) in enumerate(zip(users, ts, strict=True)):
        run = run + 1 if i and users[i - 1] == u and ts[i - 1] == t else 0
        if run >= TIE_STEP:
            raise ExportError(f"user {u!r}: more than {TIE_STEP - 1} events at ts {t}: offsets would overlap")
        out.append(f"{t}.{run:03d}")
    return out


def export_recbole(root: Path, domain: str, out: Path) -> dict[str, int | str]:
    """Write the RecBole files of `domain` under `<out>/<domain>/`; return their row counts."""
    where = [("domain", "=", domain)]
    events = pq.read_table(parquet_files(SILVER_EVENTS, root), schema=SILVER_EVENTS.schema, filters=where)
    items = pq.read_table(parquet_files(SILVER_ITEMS, root), schema=SILVER_ITEMS.schema, filters=where)
    if events.num_rows == 0:
        raise ExportError(
            f"{SILVER_EVENTS.path(root)}: no events of domain {domain!r} (run behaviors with it)"
        )
    events = events.sort_by([("user_id", "ascending"), ("position", "ascending")])
    items = items.sort_by("item_id")
    users, item_ids = events["user_id"].to_pylist(), events["item_id"].to_pylist()
    bad = next((x for x in (*users, *item_ids) if "\t" in x or "\n" in x), None)
    if bad is not None:
        raise ExportError(
            f"domain {domain}: id {bad!r} holds a tab or newline, which RecBole's format cannot carry"
        )
    stamps = _timestamps(users, events["ts"].to_pylist())
    titles = pc.fill_null(items["title"], "").to_pylist()
    categories = pc.fill_null(items["category"], "").to_pylist()
    target = Path(out) / domain
    with atomic_dir(target) as tmp:
        with open(tmp / f"{domain}.inter", "w", encoding="utf-8") as f:
            f.write("user_id:token\titem_id:token\ttimestamp:float\n")
            f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in zip(users, item_ids, stamps, strict=True))
        with open(tmp / f"{domain}.item", "w", encoding="utf-8") as f:
            f.write("item_id:token\ttitle:token_seq\tcategories:token_seq\n")
            for i, t, c in zip(items["item_id"].to_pylist(), titles, categories, strict=True):
                f.write(f"{i}\t{clean_text(t)}\t{clean_text(c)}\n")
        (tmp / "recbole.yaml").write_text(recbole_yaml(domain, Path(out).resolve()))
    return {"dir": str(target), "interactions": events.num_rows, "items": items.num_rows}
