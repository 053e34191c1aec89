"""The layers import downwards only: cprec_core (the library) knows nothing of Prefect, tasks or
flows; tasks (thin Prefect tasks) know nothing of flows. Read from the source, not by importing."""

from __future__ import annotations

import ast
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
