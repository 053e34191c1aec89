"""Start CPT through the standard launchers (torchrun or deepspeed) and supervise the processes.

Reads GOLD_PACKED's manifest (part of the job fingerprint) and the base model dir; writes the
job's work dir <out_dir>.work/ (job.json, ds_config.json, checkpoints/, train_log.jsonl) and,
through the launched processes (cpt/train.py), the output dir <out_dir>. Implements DESIGN.md stage 5:
"Multi-GPU and multi-node runs are launched by the standard deepspeed/torchrun launchers; the
task only builds and supervises that command and streams its logs."
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cprec_core.artifacts import atomic_write_text, identity, model_fingerprint, read_manifest
from cprec_core.config import Config, ConfigError, LauncherConfig
from cprec_core.cpt import read_summary
from cprec_core.cpt.entry import FAILED
from cprec_core.cpt.train import JobSpec
from cprec_core.errors import UserError
from cprec_core.locks import holds_run_lock
from cprec_core.models import check_model_path
from cprec_core.schema import GOLD_PACKED

log = logging.getLogger("cprec.cpt")

ENTRY_MODULE = "cprec_core.cpt.entry"
TAIL_LINES = 40


class CPTError(UserError, RuntimeError):
    """The launched training exited non-zero; the message carries its last output lines."""


def free_port() -> int:
    """A TCP port free on this host right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs_per_node(launcher: LauncherConfig) -> int:
    return launcher.num_gpus if launcher.num_gpus > 0 else launcher.nproc_per_node


def build_launch_command(launcher: LauncherConfig, entry_args: list[str]) -> list[str]:
    """The launcher argv (a list, never a shell string) that starts ENTRY_MODULE on this node.

    torchrun (as `python -m torch.distributed.run`, the same program): --nnodes, --nproc_per_node,
    --node_rank, --master_addr, --master_port. deepspeed (`python -m deepspeed.launcher.runner`):
    --num_nodes, --num_gpus (processes per node, CPU ones too), --master_addr, --master_port,
    --hostfile (multi-node over ssh/pdsh from node 0) or else --no_ssh --node_rank (run on every
    node), and --no_local_rank: the entry reads LOCAL_RANK from the environment.
    """
    if (error := launcher.node_rank_error()) is not None:  # a LauncherConfig outside a Config
        raise ConfigError(error)
    nproc = str(_procs_per_node(launcher))
    addr, port = launcher.master_addr, str(launcher.master_port)
    if launcher.kind == "torchrun":
        return [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", str(launcher.num_nodes),
            "--nproc_per_node", nproc,
            "--node_rank", str(launcher.node_rank),
            "--master_addr", addr,
            "--master_port", port,
            "-m", ENTRY_MODULE, *entry_args,
        ]  # fmt: skip
    argv = [
        sys.executable, "-m", "deepspeed.launcher.runner",
        "--num_nodes", str(launcher.num_nodes),
        "--num_gpus", nproc,
        "--master_addr", addr,
        "--master_port", port,
    ]  # fmt: skip
    if launcher.hostfile is not None:
        argv += ["--hostfile", str(launcher.hostfile)]
    elif launcher.num_nodes > 1:
        argv += ["--no_ssh", "--node_rank", str(launcher.node_rank)]
    return [*argv, "--no_local_rank", "--module", ENTRY_MODULE, *entry_args]


def launch_env(launcher: LauncherConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the launcher: CPU accelerator when no GPUs, the socket interface if set."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    if launcher.num_gpus == 0:
        env["DS_ACCELERATOR"] = "cpu"
    if launcher.socket_ifname:
        env["GLOO_SOCKET_IFNAME"] = launcher.socket_ifname
        env["NCCL_SOCKET_IFNAME"] = launcher.socket_ifname
    return env


def work_dir_for(out_dir: Path) -> Path:
    """Checkpoints and logs of the job producing `out_dir` live beside it."""
    return out_dir.parent / f"{out_dir.name}.work"


def job_spec(cfg: Config, base_model_dir: Path, out_dir: Path) -> JobSpec:
    """The job spec of this config: absolute paths, fingerprinted by what changes the training (the
    base model by its content: a moved model dir keeps the checkpoints, new weights clear them)."""
    check_model_path(base_model_dir, key="base model")
    root = Path(cfg.root).resolve()
    packed = read_manifest(GOLD_PACKED, root).fingerprint
    # What changes the trained weights; the launcher layout is checked on resume instead (a new
    # master address must not throw the checkpoints away).
    cpt_values = cfg.cpt.model_dump(
        mode="json", exclude={"log_every", "checkpoint_every", "keep_checkpoints", "launcher"}
    )
    inputs = {"base_model": model_fingerprint(base_model_dir), "packed": packed}
    out_dir = Path(out_dir).resolve()
    return JobSpec(
        cpt=cfg.cpt,
        root=root,
        base_model_dir=Path(base_model_dir).resolve(),
        out_dir=out_dir,
        work_dir=work_dir_for(out_dir),
        probe_seq_len=cfg.pack.seq_len,
        # no code version: a resumed job keeps its checkpoints across a deploy of new code
        config_hash=identity({"cpt": cpt_values}, inputs, code=False),
    )


def prepare_work_dir(spec: JobSpec) -> Path:
    """Write job.json; a work dir left by a different job (config, data, base model) is cleared."""
    path = spec.work_dir / "job.json"
    if path.is_file():
        old = JobSpec.load(path)
        if old.config_hash != spec.config_hash:
            log.warning(
                "%s: left by a different CPT job (config, data or base model changed): clearing it",
                spec.work_dir,
            )
            shutil.rmtree(spec.work_dir)
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, spec.model_dump_json(indent=2))
    return path


def launch_job(
    spec: JobSpec,
    launcher: LauncherConfig,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> None:
    """Write the spec, start the launcher, stream its output, raise CPTError if it fails.

    Each "[cpt]" progress line goes to `report` (the stage's run log, shown in the terminal and the
    Prefect UI alike) when given, else to this module's logger, and is printed when `progress`."""
    if launcher.pick_free_port and launcher.num_nodes == 1:
        launcher = launcher.model_copy(update={"master_port": free_port()})
    spec_path = prepare_work_dir(spec)
    argv = build_launch_command(launcher, ["--spec", str(spec_path)])
    log.info("launching: %s", " ".join(argv))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    failures: list[str] = []
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=launch_env(launcher),
        start_new_session=True,  # its own process group: stopped as a whole below
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            if line.startswith(FAILED):
                failures.append(line)
            if line.startswith("[cpt]"):
                (report or log.info)(line)
                if progress:
                    print(line, flush=True)
            else:
                log.debug(line)
        rc = proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    if rc != 0:
        cause = failures[0] if failures else "no error line from the training processes"
        raise CPTError(
            f"{cause}\nCPT launcher exited with code {rc} (job {spec_path}); last output lines:\n"
            + "\n".join(tail)
        )


@holds_run_lock
def run_cpt(
    cfg: Config,
    base_model_dir: Path,
    out_dir: Path,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) continual pre-training of `base_model_dir` on GOLD_PACKED into `out_dir`.

    Launches cfg.cpt.launcher's command (single-process CPU runs included), streams progress and
    returns the summary written beside the model (steps, tokens, final loss, tokens/s, wall time,
    probe perplexity before/after). On a multi-node run's other nodes (node_rank > 0), which
    write no output, it returns {"node_rank": r} once this node's processes have finished.
    """
    spec = job_spec(cfg, base_model_dir, out_dir)
    launch_job(spec, cfg.cpt.launcher, progress, report)
    if cfg.cpt.launcher.node_rank > 0:
        return {"node_rank": cfg.cpt.launcher.node_rank}
    return read_summary(spec.out_dir)
