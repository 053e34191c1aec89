"""The real `cprec` flow on tiny synthetic data: content-keyed caching across runs.

An unchanged rerun is all cache hits (Prefect state "Cached", artifacts untouched); changing one
config section reruns that stage and the ones below it, nothing above; deleting an output makes
its stage run again instead of trusting the cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prefect_runs import final_task_runs

from cprec_core.artifacts import verify
from cprec_core.config import Config, load_config
from cprec_core.schema import BRONZE_INTERACTIONS, GOLD_CORPUS, SILVER_EVENTS

DATA_STAGES = "ingest,behaviors,corpus"


def tiny_config(tmp: Path, *extra: str) -> Config:
    return load_config(
        None,
        [
            f"paths.root={tmp / 'root'}",
            f"synth.out_dir={tmp / 'raw'}",
            "synth.n_users=150",
            "synth.n_items_per_domain=40",
            "synth.n_interactions=4000",
            f"ingest.sources=[{{format: amazon2023, path: {tmp / 'raw'}}}]",
            "behaviors.k_core=2",
            *extra,
        ],
    )


def task_states(flow_state) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    runs = final_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}  # task run names are "<task>-<suffix>"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cprec_core.ingest.synth import generate_synthetic

    tmp = tmp_path_factory.mktemp("flow")
    generate_synthetic(tiny_config(tmp).synth)
    return tmp


def run(cfg: Config, stages: str = DATA_STAGES):
    from flows.cprec import cprec

    return cprec(config=cfg.model_dump(mode="json"), stages=stages, return_state=True)


def test_rerun_is_all_cache_hits_and_config_change_reruns_downstream(
    prefect_harness, synth_dir: Path
) -> None:
    cfg = tiny_config(synth_dir)
    first = run(cfg)
    assert first.is_completed()
    assert set(task_states(first).values()) == {"Completed"}
    fingerprints = {
        a.name: verify(a.path(cfg.root)).fingerprint
        for a in (BRONZE_INTERACTIONS, SILVER_EVENTS, GOLD_CORPUS)
    }
    created = verify(GOLD_CORPUS.path(cfg.root)).created_at

    second = run(cfg)
    assert task_states(second) == {"ingest": "Cached", "behaviors": "Cached", "corpus": "Cached"}
    assert verify(GOLD_CORPUS.path(cfg.root)).created_at == created

    # A corpus-only change: ingest and behaviors stay cached, corpus reruns.
    changed = cfg.model_copy(deep=True)
    changed.corpus.mix_ratio = 0.2
    third = run(changed)
    assert task_states(third) == {"ingest": "Cached", "behaviors": "Cached", "corpus": "Completed"}
    assert verify(BRONZE_INTERACTIONS.path(cfg.root)).fingerprint == fingerprints["bronze.interactions"]
    assert verify(GOLD_CORPUS.path(cfg.root)).fingerprint != fingerprints["gold.corpus"]

    # Back to the first config: its cache entry exists, but the corpus on disk is the 0.2 one,
    # so the stamp does not match and corpus must run again (and reproduce the first corpus).
    fourth = run(cfg)
    assert task_states(fourth)["corpus"] == "Completed"
    assert verify(GOLD_CORPUS.path(cfg.root)).fingerprint == fingerprints["gold.corpus"]


def test_deleted_output_is_rebuilt_not_trusted(prefect_harness, synth_dir: Path) -> None:
    cfg = tiny_config(synth_dir, "name=deleted", f"paths.root={synth_dir / 'root2'}")
    run(cfg)
    shutil.rmtree(SILVER_EVENTS.path(cfg.root))
    again = run(cfg)
    states = task_states(again)
    assert states["ingest"] == "Cached"
    assert states["behaviors"] == "Completed"
    verify(SILVER_EVENTS.path(cfg.root))


def test_each_stage_key_is_computed_once_per_run(
    prefect_harness, synth_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    # The flow computes a stage's key once and hands it to the task: its cache, log and stamp use
    # that one (reading every input's manifest and hashing the config three times cost as much).
    import flows.cprec
    import tasks.common

    calls: list[str] = []
    real = flows.cprec.stage_key

    def counted(stage: str, cfg: Config) -> str:
        calls.append(stage)
        return real(stage, cfg)

    monkeypatch.setattr(flows.cprec, "stage_key", counted)
    assert not hasattr(tasks.common, "stage_key")  # the tasks never compute one themselves
    cfg = tiny_config(synth_dir, f"paths.root={tmp_path / 'root'}")
    assert run(cfg).is_completed()
    assert calls == ["ingest", "behaviors", "corpus"]
