"""The worker image, the Kubernetes job template and the production config agree: where the
checkout is, where the shared run root is mounted, which torch is pinned, what the image carries.
(Building the image is `make image`, not part of CI.)"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from cprec_core.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> dict[str, list[str]]:
    """Dockerfile instructions by keyword (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            out.setdefault(keyword.upper(), []).append(rest.strip())
    return out


def container() -> dict:
    template = json.loads((ROOT / "deploy" / "k8s" / "gpu-pool-base-job-template.json").read_text())
    spec = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    return c


def test_the_job_template_runs_in_the_images_checkout_and_mounts_its_volume() -> None:
    docker = dockerfile()
    (workdir,) = docker["WORKDIR"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(docker["ENV"])))
    (volume,) = docker["VOLUME"]
    c = container()
    assert c["workingDir"] == workdir == env["CPREC_HOME"]  # the deployments' pull step works there
    assert [m["mountPath"] for m in c["volumeMounts"]] == [volume]


def test_the_production_run_root_and_base_model_are_on_the_shared_volume() -> None:
    (volume,) = dockerfile()["VOLUME"]
    cfg = load_config(ROOT / "configs" / "amazon2023.yaml")
    assert cfg.orchestration.gpu_pool and cfg.root.is_relative_to(volume)
    assert Path(cfg.model.path).is_relative_to(volume)  # the base model is on it too


def test_the_image_pins_the_makefiles_torch_and_carries_every_package() -> None:
    docker = dockerfile()
    pinned = re.search(r"torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    args = dict(a.split("=", 1) for a in docker["ARG"] if "=" in a)
    assert args["TORCH_VERSION"] == pinned
    copied = {c.split()[0] for c in docker["COPY"]}
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    sources = {p.split(".")[0] for p in setuptools["packages"] if p not in setuptools["package-dir"]}
    sources |= {d.split("/")[0] for d in setuptools["package-dir"].values()}
    assert sources <= copied, sources - copied
