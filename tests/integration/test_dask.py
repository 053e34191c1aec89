"""Scale-out: the data stages with ingest's and behaviors' domains on a 2-worker Dask LocalCluster
(prefect-dask) write the files of the in-process run, byte for byte, and each domain is its own
task run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect_runs import final_task_runs

from cprec_core.artifacts import read_manifest
from cprec_core.config import load_config
from cprec_core.ingest.synth import generate_synthetic
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    GOLD_CORPUS,
    GOLD_PROBE,
    QUARANTINE,
    SILVER_EVENTS,
    SILVER_ITEMS,
    SILVER_MIXED,
)

DOMAINS = ["Books", "Home", "Toys"]
DATA = (BRONZE_INTERACTIONS, BRONZE_ITEMS, QUARANTINE, SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED)
SETTINGS = [
    "synth.n_users=150",
    "synth.n_items_per_domain=30",
    "synth.n_interactions=4000",
    "synth.bad_row_fraction=0.005",
    "behaviors.k_core=2",
    "domains.downstream=[]",
]


def run_data_stages(tmp: Path, name: str, orchestration: list[str]) -> dict[str, str]:
    from flows.cprec import cprec

    overrides = [
        f"paths.root={tmp / name}",
        f"ingest.sources=[{{format: amazon2023, path: {tmp / 'raw'}}}]",
        f"domains.pretrain=[{', '.join(DOMAINS)}]",
        *SETTINGS,
        *orchestration,
    ]
    cfg = load_config(None, overrides)
    out = cprec(config=cfg.model_dump(mode="json"), stages="ingest,behaviors,corpus")
    assert out["ingest"]["refreshed"] == DOMAINS and out["ingest"]["quarantined"] > 0
    return {a.name: read_manifest(a, cfg.root).fingerprint for a in (*DATA, GOLD_CORPUS, GOLD_PROBE)}


def test_data_stages_on_a_dask_local_cluster_equal_the_in_process_run(
    prefect_harness, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime

    started = datetime.now(UTC)  # the harness is shared: count this test's task runs only
    synth = load_config(None, SETTINGS).synth
    generate_synthetic(
        synth.model_copy(update={"out_dir": tmp_path / "raw", "domains": ["Books", "Home", "Toys"]})
    )
    in_process = run_data_stages(tmp_path, "one", [])
    on_threads = run_data_stages(tmp_path, "threads", ["orchestration.workers=2"])
    on_dask = run_data_stages(tmp_path, "dask", ["orchestration.task_runner=dask", "orchestration.workers=2"])
    assert on_threads == in_process and on_dask == in_process

    since = TaskRunFilterStartTime(after_=started)
    runs = [
        r
        for stage in ("ingest", "behaviors")
        for r in final_task_runs(TaskRunFilter(name=TaskRunFilterName(like_=f"{stage}-"), start_time=since))
    ]
    # ingest: one task run a domain on each runner; behaviors: on Dask only (on threads one DuckDB
    # builds every domain), all reported to this run's Prefect API
    names = [f"{stage}-{d}" for stage in ("ingest", "behaviors") for d in DOMAINS]
    domain_runs = sorted(r.name for r in runs if r.name in names and r.state and r.state.is_completed())
    assert domain_runs == sorted(3 * names[:3] + names[3:])
