"""The layers import downwards only: cprec_core (the library) knows nothing of Prefect, tasks or
flows; tasks (thin Prefect tasks) know nothing of flows. Read from the source, not by importing."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"cprec_core": {"prefect", "prefect_dask", "tasks", "flows"}, "tasks": {"flows"}}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in a module, lazy imports inside functions included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_a_layer_above_it(layer: str) -> None:
    modules = sorted((ROOT / layer).rglob("*.py"))
    assert modules
    upward = {
        str(m.relative_to(ROOT)): sorted(imported_packages(m) & FORBIDDEN[layer])
        for m in modules
        if imported_packages(m) & FORBIDDEN[layer]
    }
    assert upward == {}


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from prefect import flow\n    import flows.cprec\n")
    assert imported_packages(module) == {"prefect", "flows"}


def test_the_readme_layout_names_every_module_and_folder() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout\n\n```\n", 1)[1].split("```", 1)[0]
    listed = set(layout.replace(",", " ").replace("(", " ").replace(")", " ").replace("/", " ").split())
    modules = {p.stem for p in (ROOT / "cprec_core").rglob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in (ROOT / "cprec_core").iterdir() if p.is_dir() and p.name != "__pycache__"}
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    paths = [Path(line) for line in tracked.stdout.splitlines()]
    folders = {p.parts[0] for p in paths if len(p.parts) > 1 and not p.parts[0].startswith(".")}
    folders |= {p.parts[1] for p in paths if len(p.parts) > 2 and p.parts[0] == "tests"}
    # each cprec_core module (ingest readers and cpt/rec internals by their package), each folder
    packaged = {p.stem for d in ("ingest", "cpt", "rec") for p in (ROOT / "cprec_core" / d).glob("*.py")}
    missing = sorted((modules - packaged - listed) | (folders - listed))
    assert missing == []
    named = {w.rstrip("/") for w in layout.split() if w.endswith("/")}
    assert named <= folders | modules  # and nothing listed that is not there
