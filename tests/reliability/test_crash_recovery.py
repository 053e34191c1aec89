"""SIGKILL during ingest, behaviors, corpus and pack: no partial artifact is ever read, and the rerun
writes outputs byte-identical (same manifest fingerprints) to an uninterrupted run's.

Each stage runs for real in a child process (tests/reliability/crash_child.py) that stops dead at a
chosen point: after its first batch reached an artifact's writer (the artifact's `.<name>.tmp-*`
directory then holds a half-written Parquet file), or inside the directory swap of replace_dir
(old artifact renamed aside, new one not yet in place). The parent polls for that point and the
temp directory, then sends SIGKILL: no `finally`, no clean-up, exactly like an OOM kill or a lost
node. A pause point is reached deterministically, so the kill never races the stage's end.

CPT SIGKILL + resume is covered by tests/unit/test_cpt_train.py (see RELIABILITY.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from crash_child import run_stage

from cprec_core.artifacts import MANIFEST, ArtifactError, parquet_files, read_table, verify
from cprec_core.behaviors import build_behaviors
from cprec_core.config import Config, load_config
from cprec_core.corpus import build_corpus
from cprec_core.ingest.run import run_ingest
from cprec_core.ingest.synth import generate_synthetic
from cprec_core.models import train_tokenizer
from cprec_core.pack import corpus_texts, pack_corpus
from cprec_core.paths import scratch_dir
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    GOLD_CORPUS,
    GOLD_PACKED,
    GOLD_PROBE,
    QUARANTINE,
    SILVER_EVENTS,
    SILVER_ITEMS,
    SILVER_MIXED,
    SILVER_STATS,
    Artifact,
)

CHILD = Path(__file__).with_name("crash_child.py")
OUTPUTS: dict[str, tuple[Artifact, ...]] = {
    "ingest": (BRONZE_INTERACTIONS, BRONZE_ITEMS, QUARANTINE),
    "behaviors": (SILVER_ITEMS, SILVER_EVENTS, SILVER_MIXED, SILVER_STATS),
    "corpus": (GOLD_PROBE, GOLD_CORPUS),  # in write order
    "pack": (GOLD_PACKED,),
}
ORDER = tuple(OUTPUTS)  # outputs are listed in the order each stage writes them
# the artifact each stage is killed in the middle of writing (its first write batch)
KILLED: dict[str, Artifact] = {
    "ingest": BRONZE_INTERACTIONS,
    "behaviors": SILVER_EVENTS,  # silver.items is already complete: the stage dies between artifacts
    "corpus": GOLD_CORPUS,
    "pack": GOLD_PACKED,
}


def make_config(tmp: Path, root: Path) -> Config:
    return load_config(
        None,
        [
            f"paths.root={root}",
            f"ingest.sources=[{{format: amazon2023, path: {tmp / 'raw'}}}]",
            "domains.pretrain=[Books, Home, Toys]",
            "domains.downstream=[]",
            "behaviors.k_core=2",
            "corpus.max_items=6",
            "corpus.window_overlap=2",
            "corpus.probe_docs=20",
            "pack.seq_len=32",
            "pack.batch_docs=64",
            "pack.num_proc=1",
        ],
    )


def fingerprints(root: Path, stage: str) -> dict[str, str]:
    """Content fingerprints of a stage's outputs, after checking every file's sha256."""
    return {a.name: verify(a.path(root), deep=True).fingerprint for a in OUTPUTS[stage]}


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted run of the four data stages on tiny synthetic logs: (tmp dir, tokenizer)."""
    tmp = tmp_path_factory.mktemp("crash")
    cfg = make_config(tmp, tmp / "reference")
    synth = cfg.synth.model_copy(
        update={
            "out_dir": tmp / "raw",
            "domains": ["Books", "Home", "Toys"],
            "n_users": 60,
            "n_items_per_domain": 20,
            "n_interactions": 1500,
            "bad_row_fraction": 0.005,
        }
    )
    generate_synthetic(synth)
    run_ingest(cfg)
    build_behaviors(cfg)
    build_corpus(cfg)
    tokenizer_dir = tmp / "tokenizer"
    train_tokenizer(corpus_texts(cfg), 400).save_pretrained(tokenizer_dir)
    pack_corpus(cfg, tokenizer_dir)
    return tmp, tokenizer_dir


def crash_root(tmp: Path, name: str, stage: str, keep_outputs: bool) -> Config:
    """A copy of the reference run root with `stage`'s upstream artifacts; its own outputs (and
    everything downstream) are dropped unless `keep_outputs` (a rerun over a previous good run)."""
    root = tmp / name
    shutil.copytree(tmp / "reference", root)
    shutil.rmtree(root / "tmp", ignore_errors=True)
    if not keep_outputs:
        for later in ORDER[ORDER.index(stage) :]:
            for artifact in OUTPUTS[later]:
                shutil.rmtree(artifact.path(root))
    return make_config(tmp, root)


def temp_dirs(artifact: Artifact, root: Path, kind: str = "tmp") -> list[Path]:
    """An artifact's temp dirs: beside it, or in the scratch space where ingest stages its domains."""
    final = artifact.path(root)
    pattern = f".{final.name}.{kind}-*"
    return sorted([*final.parent.glob(pattern), *scratch_dir(root).rglob(pattern)])


def start_child(
    stage: str, cfg: Config, point: str, tokenizer_dir: Path, resumable: bool = False
) -> tuple[subprocess.Popen[str], Path]:
    """Start `stage` in a child that pauses at `point`; return it and its marker file."""
    cfg_file = cfg.root.parent / f"{cfg.root.name}-{point.replace(':', '-')}.json"
    cfg_file.write_text(cfg.model_dump_json())
    marker = cfg_file.with_suffix(".paused")
    env = {**os.environ, "CRASH_CHILD_RESUMABLE": "1" if resumable else "0"}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), stage, str(cfg_file), point, str(marker), str(tokenizer_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return child, marker


def wait_until(child: subprocess.Popen[str], ready, what: str) -> None:
    """Poll (never a fixed sleep) until `ready()`; fail if the child ends first."""
    deadline = time.monotonic() + 120
    while not ready():
        if child.poll() is not None:
            assert child.stdout is not None
            pytest.fail(f"child ended (rc {child.returncode}) before {what}: {child.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"child never reached {what}")
        time.sleep(0.05)


def kill_at(stage: str, cfg: Config, point: str, tokenizer_dir: Path, wait_for: Artifact, kind: str) -> Path:
    """Run `stage` in a child, SIGKILL it at `point` once wait_for's `.name.<kind>-*` dir exists;
    return that directory (left behind by the dead child)."""
    child, marker = start_child(stage, cfg, point, tokenizer_dir)
    try:
        wait_until(child, lambda: marker.exists() and temp_dirs(wait_for, cfg.root, kind), point)
        assert int(marker.read_text()) == child.pid
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    (left,) = temp_dirs(wait_for, cfg.root, kind)
    return left


@pytest.mark.parametrize("stage", ORDER)
def test_sigkill_mid_write_then_rerun_is_identical(stage: str, uninterrupted_run: tuple[Path, Path]) -> None:
    tmp, tokenizer_dir = uninterrupted_run
    cfg = crash_root(tmp, f"killed-{stage}", stage, keep_outputs=False)
    killed = KILLED[stage]
    stale = kill_at(stage, cfg, f"write:{killed.name}:1", tokenizer_dir, killed, "tmp")

    # the child died mid-write: a half-written Parquet file sits in the temp dir, with no manifest
    assert list(stale.rglob("*.parquet")) and not (stale / MANIFEST).exists()
    with pytest.raises(ArtifactError, match="missing or incomplete"):
        verify(stale)  # a temp dir is never accepted as an artifact, even if pointed at directly
    # readers see "missing", never the partial rows; nothing downstream of the kill was published
    for artifact in OUTPUTS[stage][OUTPUTS[stage].index(killed) :]:
        with pytest.raises(ArtifactError, match="rerun its stage"):
            read_table(artifact, cfg.root)

    run_stage(stage, cfg, tokenizer_dir)
    assert fingerprints(cfg.root, stage) == fingerprints(tmp / "reference", stage)
    # the rerun, holding the run-root lock (no other writer alive), swept the dead child's temp dir
    assert not stale.exists()
    listed = parquet_files(killed, cfg.root)
    assert listed and not any(stale.name in f for f in listed)


@pytest.mark.parametrize("stage", ORDER)
def test_sigkill_mid_write_leaves_the_previous_artifact_whole(
    stage: str, uninterrupted_run: tuple[Path, Path]
) -> None:
    tmp, tokenizer_dir = uninterrupted_run
    cfg = crash_root(tmp, f"rewrite-{stage}", stage, keep_outputs=True)
    if stage == "corpus":  # the same inputs keep the corpus as it is: ask for another mix (same probe)
        mix = 0.3 if cfg.corpus.mix_ratio != 0.3 else 0.4
        cfg = cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update={"mix_ratio": mix})})
    before = fingerprints(cfg.root, stage)
    kill_at(stage, cfg, f"write:{KILLED[stage].name}:1", tokenizer_dir, KILLED[stage], "tmp")
    # every output is still the previous complete artifact, hash for hash
    assert fingerprints(cfg.root, stage) == before


def test_sigkill_between_the_two_renames_of_a_swap(uninterrupted_run: tuple[Path, Path]) -> None:
    # The worst instant of replace_dir: the previous silver.events renamed aside, the new one not
    # yet renamed into place. Readers must then see "missing" (never an empty or mixed artifact);
    # a rerun restores exactly the reference, and the leftovers are swept, never read.
    tmp, tokenizer_dir = uninterrupted_run
    cfg = crash_root(tmp, "swap-behaviors", "behaviors", keep_outputs=True)
    old = kill_at("behaviors", cfg, "swap:events", tokenizer_dir, SILVER_EVENTS, "old")
    new = temp_dirs(SILVER_EVENTS, cfg.root, "tmp")
    assert (old / MANIFEST).is_file() and len(new) == 1 and (new[0] / MANIFEST).is_file()
    assert not SILVER_EVENTS.path(cfg.root).exists()
    with pytest.raises(ArtifactError, match="rerun its stage"):
        read_table(SILVER_EVENTS, cfg.root)
    with pytest.raises(ArtifactError, match="rerun its stage"):
        build_corpus(cfg)  # the next stage refuses to run on a missing input
    verify(SILVER_ITEMS.path(cfg.root), deep=True)  # written before the kill: complete

    build_behaviors(cfg)
    assert fingerprints(cfg.root, "behaviors") == fingerprints(tmp / "reference", "behaviors")
    assert not old.exists() and not new[0].exists()  # never read, then swept under the run-root lock


def test_stray_files_inside_an_artifact_are_never_read(uninterrupted_run: tuple[Path, Path]) -> None:
    # A reader takes exactly the files the manifest lists: a stray Parquet file dropped into a
    # complete artifact (say by a crashed tool) changes nothing; a listed file cut short is refused.
    tmp, _ = uninterrupted_run
    cfg = crash_root(tmp, "stray", "pack", keep_outputs=True)
    events = SILVER_EVENTS.path(cfg.root)
    rows = read_table(SILVER_EVENTS, cfg.root).num_rows
    stray = events / "domain=Books" / "part-9.parquet"
    pq.write_table(read_table(SILVER_EVENTS, cfg.root), stray)
    assert read_table(SILVER_EVENTS, cfg.root).num_rows == rows
    assert str(stray) not in parquet_files(SILVER_EVENTS, cfg.root)
    part = events / "domain=Books" / "part-0.parquet"
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="size"):
        read_table(SILVER_EVENTS, cfg.root)


# --------------------------------------------------------------------------------------------
# Concurrency: two corpus builds on one run root


def _capture(errors: list[BaseException], fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:  # a lock refusing the second run is a fine outcome too
        errors.append(e)


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_two_corpus_builds_at_once_never_mix(uninterrupted_run: tuple[Path, Path]) -> None:
    # Two corpus builds (e.g. `cprec run --stages corpus` while the scheduled refresh rebuilds
    # the corpus) on one run root, with different corpus.seed. The race is made deterministic:
    # run A stops (SIGSTOP) right after writing gold.probe, mid-way through gold.corpus; run B
    # then runs whole; A continues. The corpus stage's two outputs must come from ONE run.
    tmp, tokenizer_dir = uninterrupted_run
    cfg_a = crash_root(tmp, "race", "corpus", keep_outputs=False)
    cfg_b = cfg_a.model_copy(update={"corpus": cfg_a.corpus.model_copy(update={"seed": 1})})
    expected = []
    for name, cfg in (("race-ref-a", cfg_a), ("race-ref-b", cfg_b)):
        alone = crash_root(tmp, name, "corpus", keep_outputs=False)
        build_corpus(alone.model_copy(update={"corpus": cfg.corpus}))
        expected.append(fingerprints(alone.root, "corpus"))
    assert expected[0] != expected[1]  # the seeds give different corpora (else the test is void)

    child, marker = start_child("corpus", cfg_a, "write:gold.corpus:1", tokenizer_dir, resumable=True)
    try:
        wait_until(child, lambda: marker.exists() and _stopped(child.pid), "gold.corpus first write")
        # B in a thread: a lock that makes B wait for A must not deadlock the test (A is stopped)
        b_error: list[BaseException] = []
        b = threading.Thread(target=lambda: _capture(b_error, build_corpus, cfg_b))
        b.start()
        b.join(timeout=20)  # B done (no lock, or refused by one) or still waiting on A's lock
        os.kill(child.pid, signal.SIGCONT)
        assert child.wait(timeout=120) == 0, child.stdout.read() if child.stdout else ""
        b.join(timeout=120)
        assert not b.is_alive()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout:
            child.stdout.close()
    final = fingerprints(cfg_a.root, "corpus")
    origin = {
        name: run for run, e in zip("AB", expected, strict=True) for name in e if e[name] == final[name]
    }
    assert final in expected, (
        f"the corpus stage's outputs come from two runs: {origin} (B raised {b_error!r})"
    )
