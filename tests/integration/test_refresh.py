"""Incremental refresh through the real flow: no change → no-op; a new domain file → only that
domain is ingested and `cprec.corpus.updated` reaches the Prefect API; a held lock → the second
refresh exits cleanly; two refresh processes at once never both do the work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cprec_core.artifacts import verify
from cprec_core.config import Config, load_config
from cprec_core.ingest.synth import generate_synthetic
from cprec_core.refresh import refresh_lock
from cprec_core.schema import BRONZE_INTERACTIONS, GOLD_CORPUS

DOMAINS = ["Books", "Home", "Toys"]
SETTINGS = {
    "synth.n_users=120",
    "synth.n_items_per_domain=30",
    "synth.n_interactions=3000",
    "behaviors.k_core=2",
    "domains.downstream=[]",
}


def config(tmp: Path, domains: list[str], *more: str) -> Config:
    return load_config(
        None,
        [
            f"paths.root={tmp / 'root'}",
            f"ingest.sources=[{{format: amazon2023, path: {tmp / 'raw'}}}]",
            f"domains.pretrain={domains}",
            *sorted(SETTINGS),
            *more,
        ],
    )


def write_domain_files(tmp: Path, domains: list[str], seed: int) -> None:
    """Generate domains elsewhere and move their files into the raw dir (a log drop)."""
    staging = tmp / f"staging-{seed}"
    cfg = config(tmp, domains).synth.model_copy(update={"out_dir": staging, "domains": domains, "seed": seed})
    generate_synthetic(cfg)
    (tmp / "raw").mkdir(exist_ok=True)
    for f in staging.iterdir():
        shutil.move(str(f), tmp / "raw" / f.name)


def refresh(cfg: Config) -> dict:
    from flows.refresh import corpus_refresh

    return corpus_refresh(config=cfg.model_dump(mode="json"))


def partition_hashes(cfg: Config) -> dict[str, str]:
    files = verify(BRONZE_INTERACTIONS.path(cfg.root)).files
    return {name: meta["sha256"] for name, meta in files.items()}


def read_corpus_events() -> list:
    """The `cprec.corpus.updated` events on the test server (every test's)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=["cprec.corpus.updated"])), limit=50)
    return page.events


def test_new_domain_file_refreshes_only_that_domain_and_emits_event(prefect_harness, tmp_path: Path) -> None:
    write_domain_files(tmp_path, DOMAINS, seed=1)
    cfg = config(tmp_path, DOMAINS)
    first = refresh(cfg)
    assert first["status"] == "updated" and first["changed_domains"] == DOMAINS

    assert refresh(cfg) == {"status": "unchanged", "changed_domains": []}

    before = partition_hashes(cfg)
    write_domain_files(tmp_path, ["Garden"], seed=2)
    grown = config(tmp_path, [*DOMAINS, "Garden"])
    third = refresh(grown)
    assert third["status"] == "updated"
    assert third["changed_domains"] == ["Garden"]
    assert third["results"]["ingest"]["refreshed"] == ["Garden"]
    after = partition_hashes(grown)
    assert {k: v for k, v in after.items() if "Garden" not in k} == before  # others untouched
    assert any("domain=Garden" in k for k in after)
    corpus = verify(GOLD_CORPUS.path(grown.root)).extra
    assert corpus["documents"]["domain"]["Garden"] > 0

    deadline = time.monotonic() + 30
    events = []
    while time.monotonic() < deadline and len(events) < 2:
        events = read_corpus_events()
        time.sleep(1)
    payloads = [e.payload["changed_domains"] for e in events]
    assert ["Garden"] in payloads and DOMAINS in payloads


def test_a_refresh_right_after_a_run_is_a_no_op(prefect_harness, tmp_path: Path) -> None:
    from flows.cprec import cprec

    write_domain_files(tmp_path, DOMAINS, seed=1)
    cfg = config(tmp_path, DOMAINS)
    cprec(config=cfg.model_dump(mode="json"), stages="ingest,behaviors,corpus")
    assert refresh(cfg) == {"status": "unchanged", "changed_domains": []}  # nothing re-ingested
    write_domain_files(tmp_path, ["Garden"], seed=2)
    assert refresh(config(tmp_path, [*DOMAINS, "Garden"]))["changed_domains"] == ["Garden"]


def test_new_logs_of_a_downstream_domain_leave_the_corpus_as_it_is_and_emit_nothing(
    prefect_harness, tmp_path: Path
) -> None:
    write_domain_files(tmp_path, [*DOMAINS, "Garden"], seed=5)
    cfg = config(tmp_path, DOMAINS, "domains.downstream=[Garden]", "name=downstream-logs")
    assert refresh(cfg)["status"] == "updated"
    corpus = verify(GOLD_CORPUS.path(cfg.root))

    write_domain_files(tmp_path, ["Garden"], seed=6)  # a new log drop of the downstream domain
    out = refresh(cfg)
    assert out["status"] == "corpus-unchanged" and out["changed_domains"] == ["Garden"]
    assert out["results"]["ingest"]["refreshed"] == ["Garden"]
    assert out["results"]["behaviors"]["rebuilt_domains"] == ["Garden"]
    kept = verify(GOLD_CORPUS.path(cfg.root))
    assert kept.fingerprint == corpus.fingerprint and kept.files == corpus.files
    time.sleep(2)  # events reach the API asynchronously: give a wrong one time to arrive
    mine = [e for e in read_corpus_events() if e.resource.id == "cprec.corpus.downstream-logs"]
    assert [e.payload["changed_domains"] for e in mine] == [sorted([*DOMAINS, "Garden"])]  # the first one


def test_a_refresh_that_dies_is_announced_once_by_the_next(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_domain_files(tmp_path, DOMAINS, seed=7)
    cfg = config(tmp_path, DOMAINS, "name=died-refresh")
    assert refresh(cfg)["status"] == "updated"
    before = verify(GOLD_CORPUS.path(cfg.root)).fingerprint

    def die(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed")

    def refresh_killed_at(step: str) -> None:
        with monkeypatch.context() as m:
            m.setattr(f"flows.refresh.{step}", die)
            with pytest.raises(RuntimeError, match="killed"):
                refresh(cfg)

    # new logs of a pretrain domain; the refresh rebuilds the corpus and dies before it tells
    write_domain_files(tmp_path, ["Home"], seed=8)
    refresh_killed_at("emit_event")
    assert verify(GOLD_CORPUS.path(cfg.root)).fingerprint != before  # rebuilt, never announced
    again = refresh(cfg)  # the corpus is already rebuilt: this run changes nothing, and still tells
    assert again["status"] == "updated" and again["changed_domains"] == ["Home"]

    # new logs again; this refresh tells, then dies before it records the raw state
    write_domain_files(tmp_path, ["Books"], seed=9)
    refresh_killed_at("save_fingerprints")
    redo = refresh(cfg)  # the work is redone, and not told twice
    assert redo["status"] == "corpus-unchanged" and redo["changed_domains"] == ["Books"]
    assert refresh(cfg) == {"status": "unchanged", "changed_domains": []}

    told = [DOMAINS, ["Home"], ["Books"]]
    deadline, mine = time.monotonic() + 30, []
    while time.monotonic() < deadline and len(mine) < len(told):
        mine = [e for e in read_corpus_events() if e.resource.id == "cprec.corpus.died-refresh"]
        time.sleep(0.5)
    time.sleep(1)  # a duplicate would arrive after the last expected one
    mine = [e for e in read_corpus_events() if e.resource.id == "cprec.corpus.died-refresh"]
    assert sorted(e.payload["changed_domains"] for e in mine) == sorted(told)


def test_refresh_while_another_holds_the_lock_exits_cleanly(prefect_harness, tmp_path: Path) -> None:
    write_domain_files(tmp_path, DOMAINS, seed=3)
    cfg = config(tmp_path, DOMAINS)
    with refresh_lock(cfg):
        assert refresh(cfg) == {"status": "busy", "changed_domains": []}
    assert refresh(cfg)["status"] == "updated"  # the lock is gone with its holder


@pytest.mark.slow
def test_two_refresh_processes_at_once(tmp_path: Path) -> None:
    write_domain_files(tmp_path, DOMAINS, seed=4)
    cfg_file = tmp_path / "refresh.yaml"
    cfg_file.write_text(yaml.safe_dump(config(tmp_path, DOMAINS).model_dump(mode="json")))
    cli = Path(sys.executable).with_name("cprec")
    procs = [
        subprocess.Popen(
            [str(cli), "refresh", "--config", str(cfg_file)],
            env={**os.environ, "PREFECT_HOME": str(tmp_path / f"prefect-home-{i}")},  # one ephemeral DB each
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    statuses = sorted(json.loads(o.strip().splitlines()[-1])["status"] for o in outputs)
    assert statuses in (["busy", "updated"], ["unchanged", "updated"]), statuses
    verify(GOLD_CORPUS.path(tmp_path / "root"), deep=True)  # one complete corpus, never a mix
