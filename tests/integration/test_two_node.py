"""Two-node CPT on one machine: two network namespaces joined by a veth pair, one torchrun node in
each (the argv build_launch_command produces), compared with a 2-process single-node run.

Needs root and iproute2 (`ip netns`); skips with the reason otherwise. The namespaces are
deleted in a finally block. STACK-NOTES "Two nodes on one machine": gloo must be told the
interface (GLOO_SOCKET_IFNAME) or it binds to 127.0.0.1 and the nodes never meet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cpt_fixtures import base_dir, make_workspace, with_cpt

from cprec_core.cpt.launcher import (
    build_launch_command,
    free_port,
    job_spec,
    launch_env,
    prepare_work_dir,
    run_cpt,
)
from cprec_core.cpt.train import LOG_FILE

pytestmark = pytest.mark.slow

SUBNET = "10.231.{}.{}"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _netns_pair(tag: str) -> tuple[list[str], list[str]]:
    """Create namespaces A and B joined by veth va <-> vb; return (namespaces, interfaces)."""
    ns = [f"cprec{tag}a", f"cprec{tag}b"]
    ifs = [f"cpv{tag}a", f"cpv{tag}b"]
    net = int(tag) % 250
    steps = [
        ("netns", "add", ns[0]),
        ("netns", "add", ns[1]),
        ("link", "add", ifs[0], "type", "veth", "peer", "name", ifs[1]),
        ("link", "set", ifs[0], "netns", ns[0]),
        ("link", "set", ifs[1], "netns", ns[1]),
    ]
    for i in range(2):
        steps += [
            ("-n", ns[i], "addr", "add", SUBNET.format(net, i + 1) + "/24", "dev", ifs[i]),
            ("-n", ns[i], "link", "set", "lo", "up"),
            ("-n", ns[i], "link", "set", ifs[i], "up"),
        ]
    for step in steps:
        res = _ip(*step)
        if res.returncode != 0:
            raise PermissionError(f"ip {' '.join(step)}: {res.stderr.strip()}")
    return ns, ifs


def _delete(ns: list[str]) -> None:
    for name in ns:  # deleting a namespace also deletes the veth end inside it
        _ip("netns", "del", name)


def test_two_nodes_in_network_namespaces_match_a_single_node_run(tmp_path: Path) -> None:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 `ip` not found: cannot create network namespaces")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    tag = str(os.getpid() % 10000)
    try:
        ns, ifs = _netns_pair(tag)
    except PermissionError as e:
        _delete([f"cprec{tag}a", f"cprec{tag}b"])
        pytest.skip(f"network namespaces not permitted here: {e}")
    procs: list[subprocess.Popen] = []
    try:
        workspace = make_workspace(tmp_path)
        cfg = with_cpt(workspace, micro_batch_size=2, max_steps=10, checkpoint_every=5, probe_max_docs=0)
        single = run_cpt(
            with_cpt(cfg, launcher={"nproc_per_node": 2}), base_dir(cfg), tmp_path / "single", progress=False
        )

        out = tmp_path / "two_node"
        spec_path = prepare_work_dir(job_spec(cfg, base_dir(cfg), out))
        port = free_port()
        logs = []
        for rank in range(2):
            launcher = cfg.cpt.launcher.model_copy(
                update={
                    "num_nodes": 2,
                    "nproc_per_node": 1,
                    "node_rank": rank,
                    "master_addr": SUBNET.format(int(tag) % 250, 1),
                    "master_port": port,
                    "socket_ifname": ifs[rank],
                }
            )
            argv = build_launch_command(launcher, ["--spec", str(spec_path)])
            assert argv[3:9] == ["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank)]
            log = open(tmp_path / f"node{rank}.log", "w")  # noqa: SIM115 (closed below)
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns[rank], *argv],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=launch_env(launcher),
                )
            )
        codes = [p.wait(timeout=400) for p in procs]
        for log in logs:
            log.close()
        outputs = [(tmp_path / f"node{r}.log").read_text() for r in range(2)]
        assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)

        summary = json.loads((out / "summary.json").read_text())
        assert summary["processes"] == 2  # one process per node, one world
        ckpt = out.parent / f"{out.name}.work" / "checkpoints" / "step00000010"
        assert (ckpt / "rng_rank1.pt").is_file()  # node 1 took part in every checkpoint
        two_node = [json.loads(x)["loss"] for x in (out / LOG_FILE).read_text().splitlines()]
        one_node = [json.loads(x)["loss"] for x in (tmp_path / "single" / LOG_FILE).read_text().splitlines()]
        assert len(two_node) == 10
        assert two_node == pytest.approx(one_node, abs=1e-5)
        assert summary["final_loss"] == pytest.approx(single["final_loss"], abs=1e-5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        _delete(ns)
