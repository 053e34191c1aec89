"""The built wheel runs anywhere: installed in a fresh virtual environment, used from an empty
directory far from the checkout, it finds its SQL, configs and DeepSpeed templates and runs a tiny
pipeline through CPT.

The fresh environment borrows the dependencies of the test's own environment through a `.pth`
file (installing torch and the rest again would take minutes and test pip, not cprec); cprec
itself comes only from the wheel: the checkout is on no path of that environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "synth.n_users=100",
    "synth.n_items_per_domain=30",
    "synth.n_interactions=3000",
    "behaviors.k_core=2",
    "model.tiny.pretrain_steps=4",
    "cpt.max_steps=3",
    "cpt.checkpoint_every=3",
    "cpt.probe_max_docs=5",
]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    (wheel,) = dist.glob("cprec-*.whl")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    fresh = Path(
        subprocess.run(
            [
                str(env_dir / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (fresh / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # the dependencies only
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(fresh), str(wheel)],
        check=True,
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    python = str(env_dir / "bin" / "python")
    where = subprocess.run(
        [
            python,
            "-c",
            "import cprec_core, cprec_core.sql as s; print(cprec_core.__file__); print(s.SQL_DIR)",
        ],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(str(fresh) in w and str(ROOT) not in w for w in where), (
        where
    )  # the wheel's files, not the checkout's

    shown = subprocess.run(
        [python, "-m", "flows.cli", "config", "show", "demo"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    )
    (work / "my.yaml").write_text(shown.stdout)
    run = subprocess.run(
        [
            python,
            "-m",
            "flows.cli",
            "run",
            "--config",
            "my.yaml",
            "--stages",
            "ingest,behaviors,corpus,pack,cpt",
        ]
        + [arg for o in SMALL for arg in ("--set", o)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((work / "var" / "demo" / "models" / "cpt" / "demo" / "summary.json").read_text())
    assert summary["steps"] == 3
    assert (work / "var" / "demo" / "silver" / "events" / "_manifest.json").is_file()
