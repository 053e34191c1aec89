"""Where the files cprec ships beside its code live: the SQL steps, the configs, the DeepSpeed
templates. In a checkout they are the top-level `sql/`, `configs/` and `deploy/deepspeed/`; an
installed wheel carries the same files as the data packages `cprec_sql`, `cprec_configs` and
`cprec_deepspeed` (pyproject.toml maps them), so cprec runs from any directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
SHIPPED = {
    "sql": ("sql", "cprec_sql"),
    "configs": ("configs", "cprec_configs"),
    "deepspeed": ("deploy/deepspeed", "cprec_deepspeed"),
}


def shipped(name: str) -> Path:
    """The directory of shipped files `name` ('sql', 'configs' or 'deepspeed')."""
    folder, package = SHIPPED[name]
    here = CHECKOUT / folder
    if here.is_dir():
        return here
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"cprec's {name} files are missing: neither {here} nor the package {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def shipped_configs() -> dict[str, Path]:
    """The configs cprec ships, by name (demo, realdata, ...)."""
    return {p.stem: p for p in sorted(shipped("configs").glob("*.yaml"))}
