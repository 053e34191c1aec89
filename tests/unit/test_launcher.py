"""Launcher argv and environment building, job spec fingerprint (no process started)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from cprec_core.artifacts import write_table
from cprec_core.config import Config, ConfigError, LauncherConfig
from cprec_core.cpt.launcher import (
    build_launch_command,
    free_port,
    job_spec,
    launch_env,
    prepare_work_dir,
    work_dir_for,
)
from cprec_core.schema import GOLD_PACKED

ENTRY = ["-m", "cprec_core.cpt.entry", "--spec", "/w/job.json"]


def test_torchrun_single_node_cpu() -> None:
    argv = build_launch_command(
        LauncherConfig(nproc_per_node=2, master_port=29600), ["--spec", "/w/job.json"]
    )
    assert argv == [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", "2", "--node_rank", "0",
        "--master_addr", "127.0.0.1", "--master_port", "29600",
        *ENTRY,
    ]  # fmt: skip


def test_torchrun_two_nodes_gpus_win_over_cpu_procs() -> None:
    launcher = LauncherConfig(num_gpus=8, nproc_per_node=1, num_nodes=2, node_rank=1, master_addr="10.0.0.1")
    argv = build_launch_command(launcher, ["--spec", "/w/job.json"])
    assert argv[3:13] == [
        "--nnodes", "2", "--nproc_per_node", "8", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--master_port", "29500",
    ]  # fmt: skip


def test_deepspeed_single_node_and_hostfile_and_no_ssh() -> None:
    argv = build_launch_command(LauncherConfig(kind="deepspeed", nproc_per_node=2), ["--spec", "/w/job.json"])
    assert argv == [
        sys.executable, "-m", "deepspeed.launcher.runner",
        "--num_nodes", "1", "--num_gpus", "2",
        "--master_addr", "127.0.0.1", "--master_port", "29500",
        "--no_local_rank", "--module", "cprec_core.cpt.entry", "--spec", "/w/job.json",
    ]  # fmt: skip
    hosts = LauncherConfig(kind="deepspeed", num_gpus=4, num_nodes=2, hostfile=Path("/etc/hosts.ds"))
    argv = build_launch_command(hosts, [])
    assert argv[argv.index("--hostfile") + 1] == "/etc/hosts.ds"
    assert "--no_ssh" not in argv
    no_ssh = LauncherConfig(kind="deepspeed", num_gpus=4, num_nodes=2, node_rank=1)
    argv = build_launch_command(no_ssh, [])
    assert argv[argv.index("--no_ssh") + 1 : argv.index("--no_ssh") + 3] == ["--node_rank", "1"]


def test_node_rank_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"cpt.launcher.node_rank=2 must be < cpt.launcher.num_nodes=2"):
        build_launch_command(LauncherConfig(num_nodes=2, node_rank=2), [])


def test_launch_env() -> None:
    env = launch_env(LauncherConfig(socket_ifname="va"), base={"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "PYTHONUNBUFFERED": "1",
        "DS_ACCELERATOR": "cpu",
        "GLOO_SOCKET_IFNAME": "va",
        "NCCL_SOCKET_IFNAME": "va",
    }
    assert "DS_ACCELERATOR" not in launch_env(LauncherConfig(num_gpus=1), base={})


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def cpt_job_world(root: Path, weights: bytes) -> tuple[Config, Path, Path]:
    """A run root with packed data, a base model dir holding `weights`, and the CPT output dir."""
    write_table(GOLD_PACKED, root, pa.table({"input_ids": [[1, 2, 3, 4]]}))
    base = root / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(weights)
    return Config.model_validate({"paths": {"root": str(root)}}), base, root / "models" / "cpt" / "demo"


def test_job_spec_change_clears_the_work_dir(tmp_path: Path) -> None:
    cfg, base, out = cpt_job_world(tmp_path, b"")
    spec = job_spec(cfg, base, out)
    assert spec.work_dir == work_dir_for(out.resolve()) == out.resolve().parent / "demo.work"
    prepare_work_dir(spec)
    marker = spec.work_dir / "checkpoints" / "x"
    marker.parent.mkdir()
    marker.touch()
    # logging cadence and launcher address do not change the training: checkpoints kept
    cfg.cpt.log_every = 1
    cfg.cpt.launcher.master_addr = "10.0.0.9"
    prepare_work_dir(job_spec(cfg, base, out))
    assert marker.exists()
    # a different peak LR does: the old checkpoints must not be resumed
    cfg.cpt.schedule.peak_lr = 1e-3
    prepare_work_dir(job_spec(cfg, base, out))
    assert not marker.exists()
    assert (spec.work_dir / "job.json").is_file()


def test_job_spec_rejects_a_missing_base_model(tmp_path: Path) -> None:
    cfg = Config.model_validate({"paths": {"root": str(tmp_path)}})
    with pytest.raises(ValueError, match=r"base model=.*nowhere: does not exist"):
        job_spec(cfg, tmp_path / "nowhere", tmp_path / "out")


def test_job_spec_knows_the_base_model_by_its_content_not_its_path(tmp_path: Path) -> None:
    cfg, base, out = cpt_job_world(tmp_path, b"weights")
    spec = job_spec(cfg, base, out)
    prepare_work_dir(spec)
    marker = spec.work_dir / "checkpoints" / "x"
    marker.parent.mkdir()
    marker.touch()
    # the same model moved elsewhere: the same job, its checkpoints kept
    moved = base.rename(tmp_path / "elsewhere")
    again = job_spec(cfg, moved, out)
    assert again.config_hash == spec.config_hash and again.base_model_dir == moved.resolve()
    prepare_work_dir(again)
    assert marker.exists()
    # other weights at the same path: another job, the old checkpoints must not be resumed
    (moved / "model.safetensors").write_bytes(b"other weights")
    prepare_work_dir(job_spec(cfg, moved, out))
    assert not marker.exists()


def test_a_missing_cpt_summary_names_the_file_and_the_stage(tmp_path: Path) -> None:
    from cprec_core.artifacts import ArtifactError
    from cprec_core.cpt import read_summary

    with pytest.raises(ArtifactError) as err:
        read_summary(tmp_path / "models" / "cpt" / "demo")
    assert str(err.value) == (
        f"{tmp_path / 'models' / 'cpt' / 'demo' / 'summary.json'}: no CPT summary (the checkpoint is "
        "missing or incomplete): run the cpt stage"
    )
    (tmp_path / "summary.json").write_text('{"steps": 3}')
    assert read_summary(tmp_path) == {"steps": 3}
