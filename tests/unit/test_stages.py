"""cprec_core/stages.py is the one list of stages: the flow's tasks and deploy/prefect.yaml follow it."""

from __future__ import annotations

from pathlib import Path

import yaml

from cprec_core.stages import REFRESHED, SPECS, STAGES, gpu_deployment
from flows.cprec import TASKS
from flows.deploy import WORK_POOLS

ROOT = Path(__file__).resolve().parents[2]


def deployments() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_every_stage_has_its_deployment_on_its_pool_running_exactly_its_group() -> None:
    deployed = deployments()
    for stage in STAGES:
        spec = SPECS[stage]
        d = deployed[spec.deployment_name]
        group = [s for s in STAGES if SPECS[s].deployment_name == spec.deployment_name]
        assert d["parameters"]["stages"] == group, stage
        assert d["work_pool"]["name"] == f"cprec-{spec.pool}", stage
        assert d["entrypoint"] == "flows/cprec.py:cprec"
    assert {d["work_pool"]["name"] for d in deployed.values()} == set(WORK_POOLS)
    # the whole pipeline and the refresh are the only deployments that are not a stage's
    assert set(deployed) - {SPECS[s].deployment_name for s in STAGES} == {"full-pipeline", "corpus-refresh"}


def test_the_flow_runs_each_stage_through_the_task_of_its_name() -> None:
    assert list(TASKS) == list(STAGES)
    assert all(task.name == stage for stage, task in TASKS.items())


def test_the_gpu_stages_and_the_refreshed_ones_come_from_the_registry() -> None:
    # (how the flow groups them for a GPU pool: tests/unit/test_config.py)
    assert [s for s in STAGES if gpu_deployment(s)] == ["pack", "cpt", "finetune"]
    assert {gpu_deployment(s) for s in ("pack", "cpt")} == {"cpt"}
    assert REFRESHED == ("ingest", "behaviors", "corpus")


def test_an_ingest_key_reads_the_sources_and_never_generates_them(tmp_path) -> None:
    # A synthetic source is keyed by the generator's settings: computing the key writes nothing;
    # ingest then generates the files, and the key it ran under still holds; other settings,
    # another key.
    from cprec_core.config import load_config
    from cprec_core.ingest.run import run_ingest
    from cprec_core.stages import stage_key

    raw = tmp_path / "raw"
    small = ["synth.n_users=40", "synth.n_items_per_domain=20", "synth.n_interactions=400"]
    cfg = load_config(
        None,
        [f"paths.root={tmp_path / 'run'}", f"ingest.sources=[{{format: synthetic, path: {raw}}}]", *small],
    )
    key = stage_key("ingest", cfg)
    assert not raw.exists()
    run_ingest(cfg)
    assert any(raw.iterdir()) and stage_key("ingest", cfg) == key
    other = load_config(
        None,
        [
            f"paths.root={tmp_path / 'run'}",
            f"ingest.sources=[{{format: synthetic, path: {raw}}}]",
            *small,
            "synth.seed=1",
        ],
    )
    assert stage_key("ingest", other) != key


def test_a_finetune_key_follows_an_hf_base_models_files(tmp_path) -> None:
    # model.path is an HF directory cprec did not write (no _manifest.json): the finetune key
    # fingerprints its files, so it is not the key of a missing model, and new weights change it.
    import os

    from cprec_core.config import load_config
    from cprec_core.stages import stage_key

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"weights-1")

    def key(path: Path) -> str:
        return stage_key(
            "finetune", load_config(None, [f"paths.root={tmp_path / 'run'}", f"model.path={path}"])
        )

    first = key(hf)
    assert first != key(tmp_path / "nowhere")  # a missing model dir fingerprints as "missing"
    (hf / "model.safetensors").write_bytes(b"weights-1")  # rewritten, same bytes: same key
    os.utime(hf / "model.safetensors", ns=(1, 1))
    assert key(hf) == first
    (hf / "model.safetensors").write_bytes(b"other weights")
    assert key(hf) != first
