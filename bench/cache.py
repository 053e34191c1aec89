"""Benchmark 6: stage cache and incremental refresh through the real Prefect flow.

In one process with its own PREFECT_HOME (ephemeral API, started by a warm-up flow that is not
timed), on synthetic Amazon-2023 files of 7 domains:
  cold      `cprec(config, stages="ingest,behaviors,corpus")` on an empty run root;
  rerun     the same call again, nothing changed (every stage a cache hit);
  refresh0  `corpus_refresh(config)` (the cprec-refresh flow) right after: a no-op (the cold run
            recorded the raw fingerprints);
  refresh:D one domain's raw files replaced by a new log drop, then `corpus_refresh(config)`:
            only that domain is re-ingested and goes through behaviors' SQL (the others keep their
            silver partitions). Twice: Grocery, the default config's downstream domain (the mixed
            sequences and the corpus stay as they are), then Toys, a pretrain domain (the mixed
            sequences are joined again and the corpus is rebuilt, Toys' documents rendered); for
            the pretrain one, the share of the mixed events that belong to its users and its reach
            (its own events and those mixed events, of all domain and mixed events): what no
            refresh of it can avoid rebuilding;
  dask      the cold run again on a fresh run root, ingest's domains on a 2-worker Dask
            LocalCluster (orchestration.task_runner=dask), cluster start included.
Per-stage seconds come from wrapping flows.cprec.run_stage (the function both flows call).
`--sizes` runs it at several sizes (interactions; default 500,000, --quick 20,000).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bench.common import measure

CHANGED = ("Grocery", "Toys")  # the default config's downstream domain, then a pretrain one


def _synth(out: Path, n: int, domains: list[str] | None, seed: int):
    from cprec_core.config import SynthConfig

    cfg = SynthConfig(out_dir=out, n_interactions=n, n_users=max(100, n // 40), seed=seed)
    return cfg if domains is None else cfg.model_copy(update={"domains": domains})


def run_flows(work: str, n: int) -> dict[str, Any]:
    """The runs above, timed in this process, on the ephemeral API as `cprec run` runs them."""
    from flows.cprec import embedded_runs

    with embedded_runs():
        return _timed_runs(work, n)


def _timed_runs(work: str, n: int) -> dict[str, Any]:
    from prefect import flow

    import flows.cprec as fc
    from cprec_core.config import load_config
    from cprec_core.ingest.synth import generate_synthetic
    from flows.refresh import corpus_refresh

    work_dir = Path(work)
    raw, root = work_dir / "raw", work_dir / "root"
    synth = _synth(raw, n, None, 0)
    generate_synthetic(synth)
    source = f"ingest.sources=[{{format: amazon2023, path: {raw}}}]"
    config = load_config(None, [f"paths.root={root}", source]).model_dump(mode="json")
    dask = ["orchestration.task_runner=dask", "orchestration.workers=2"]
    dask_root = f"paths.root={work_dir / 'root-dask'}"
    on_dask = load_config(None, [dask_root, source, *dask]).model_dump(mode="json")
    stage_s: dict[str, float] = {}
    original = fc.run_stage

    def timed_stage(stage: str, c: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = original(stage, c, **kwargs)
        stage_s[stage] = round(time.perf_counter() - t0, 3)
        return out

    fc.run_stage = timed_stage

    @flow
    def warm_up() -> int:
        return 1

    warm_up()  # starts the ephemeral Prefect API: not part of any timing
    runs: dict[str, Any] = {}

    def timed(name: str, run: Any = fc.cprec, conf: dict[str, Any] = config, **kwargs: Any) -> dict[str, Any]:
        stage_s.clear()
        t0 = time.perf_counter()
        out = run(config=conf, **kwargs)
        runs[name] = {"seconds": time.perf_counter() - t0, "stage_seconds": dict(stage_s)}
        return out

    cold = timed("cold", stages="ingest,behaviors,corpus")
    timed("rerun", stages="ingest,behaviors,corpus")
    timed("refresh0", corpus_refresh)
    per_domain = cold["ingest"]["domains"]
    total = sum(d["interactions"] for d in per_domain.values())
    pretrain = config["domains"]["pretrain"]
    refreshes = {}
    for domain in CHANGED:
        staging = work_dir / f"staging-{domain}"
        generate_synthetic(_synth(staging, per_domain[domain]["interactions"], [domain], 1))
        for f in staging.iterdir():
            shutil.move(str(f), raw / f.name)  # a new log drop of one domain replaces its files
        reached = _domain_users(root, domain) if domain in pretrain else None  # downstream: no mixed
        out = timed(f"refresh:{domain}", corpus_refresh)
        refreshes[domain] = {
            "role": "pretrain" if domain in pretrain else "downstream",
            "share": per_domain[domain]["interactions"] / total,
            "status": out["status"],
            "refreshed": out["results"]["ingest"]["refreshed"],
            "rebuilt": out["results"]["behaviors"]["rebuilt_domains"],
            **(_mixed_reach(root, domain, reached) if reached is not None else {}),
        }
    timed("dask", conf=on_dask, stages="ingest,behaviors,corpus")  # cold again, ingest on 2 Dask workers
    return {"seconds": runs["cold"]["seconds"], "runs": runs, "refreshes": refreshes}


def _domain_users(root: Path, domain: str) -> pa.Table:
    """The users with events of `domain` in the silver.events under `root`."""
    from cprec_core.artifacts import read_table
    from cprec_core.schema import SILVER_EVENTS

    events = read_table(SILVER_EVENTS, root, columns=["domain", "user_id"])
    return pa.table({"user_id": pc.unique(events.filter(pc.equal(events["domain"], domain))["user_id"])})


def _mixed_reach(root: Path, domain: str, users_before: pa.Table) -> dict[str, float]:
    """How far one domain's change reached into the mixed sequences, on the silver after it: the
    share of mixed events that belong to users with events of the domain before or after (their
    mixed sequences change with it), and the domain's events plus those as a share of all domain
    and mixed events (what a refresh of it cannot avoid rebuilding)."""
    import duckdb

    from cprec_core.artifacts import parquet_files
    from cprec_core.schema import SILVER_EVENTS, SILVER_MIXED

    with duckdb.connect() as con:
        con.read_parquet(parquet_files(SILVER_EVENTS, root)).create_view("events")
        con.read_parquet(parquet_files(SILVER_MIXED, root)).create_view("mixed")
        con.from_arrow(pa.concat_tables([users_before, _domain_users(root, domain)])).create_view("touched")
        own, events, reached, mixed = con.sql(
            "select (select count(*) from events where domain = $d), (select count(*) from events), "
            "(select count(*) from mixed where user_id in (select user_id from touched)), "
            "(select count(*) from mixed)",
            params={"d": domain},
        ).fetchall()[0]
    return {
        "mixed_events_of_its_users": reached / mixed if mixed else 0.0,
        "reach": (own + reached) / (events + mixed),
    }


def run(work: Path, quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    """Run the flows at each size (interactions), each in a child process with a private PREFECT_HOME."""
    return {"sizes": [_one_size(work, n) for n in sizes or [20_000 if quick else 500_000]]}


def _one_size(work: Path, n: int) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res = measure(
        "bench.cache:run_flows",
        {"work": str(work), "n": n},
        env={"PREFECT_HOME": str(work / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING"},
    )
    runs = res["runs"]
    cold = runs["cold"]["seconds"]
    res.update(interactions=n, rerun_pct_of_cold=100 * runs["rerun"]["seconds"] / cold)
    for domain, r in res["refreshes"].items():
        run = runs[f"refresh:{domain}"]
        r["pct_of_cold"] = 100 * run["seconds"] / cold
        r["ingest_pct_of_cold_ingest"] = (
            100 * run["stage_seconds"].get("ingest", 0) / runs["cold"]["stage_seconds"]["ingest"]
        )
    shutil.rmtree(work, ignore_errors=True)
    return res
