"""Benchmark plumbing: every contender runs in its own Python process, timed and memory-watched.

`measure("bench.behaviors:run_pandas", kwargs)` starts `python -m bench.common`, which imports the
function, calls it with `kwargs` and writes its JSON result. The function times its own work
(`seconds`: imports and interpreter start-up excluded, so a contender is not charged for
`import torch`). The parent samples the RSS of the child's whole process tree (workers included)
every 50 ms; the child adds its own high-water mark (VmHWM), so a short spike of the main process
between two samples is not missed. Load averages before and after are recorded, because
these machines are shared and noisy.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from cprec_core.offline import OFFLINE_ENV

GIB = 1 << 30
SAMPLE_S = 0.05


class BenchError(RuntimeError):
    """A contender failed or two contenders disagreed on their output."""


def _tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (0 for those that vanished)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def measure(target: str, kwargs: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `module:function(**kwargs)` in a fresh process; its result plus peak RSS and load.

    Returns the function's dict with `peak_rss_bytes`, `wall_s` (process wall time, start-up
    included) and `load_before` / `load_after` (1-minute load averages) added.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        args, out = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args.write_text(json.dumps(kwargs, default=str))
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.common", target, str(args), str(out)],
            env={**os.environ, **OFFLINE_ENV, **(env or {})},
            cwd=Path(__file__).resolve().parent.parent,
        )
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, _tree_rss(watched))
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.is_file():
            raise BenchError(f"{target}: exited with code {proc.returncode} (its output is above)")
        result = json.loads(out.read_text())
    result["peak_rss_bytes"] = max(peak, result.pop("self_maxrss_bytes", 0))
    result.update(wall_s=round(wall, 2), load_before=round(load_before, 2), load_after=os.getloadavg()[0])
    return result


def machine() -> dict[str, Any]:
    """The machine and library versions a result was measured with."""
    import duckdb
    import pandas
    import pyarrow

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "duckdb": duckdb.__version__}
    versions.update(pandas=pandas.__version__, pyarrow=pyarrow.__version__)
    for name in ("polars", "torch", "deepspeed", "tokenizers", "prefect"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
        "kernel": platform.release(),
        "versions": versions,
    }


def polars_available() -> bool:
    """Polars is an optional benchmark-only dependency."""
    return importlib.util.find_spec("polars") is not None


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """The block's wall `seconds` and `cpu_s`: CPU-seconds of this process, every thread (not of
    child processes), set when the block ends."""
    times: dict[str, float] = {}
    cpu0, t0 = time.process_time(), time.perf_counter()
    yield times
    times.update(seconds=time.perf_counter() - t0, cpu_s=time.process_time() - cpu0)


def _vm_hwm() -> int:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss, which Linux carries over from the parent
    across fork + exec, VmHWM belongs to the fresh address space of this program."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(target: str, args_path: str, out_path: str) -> None:
    module, func = target.split(":")
    fn = getattr(importlib.import_module(module), func)
    result = fn(**json.loads(Path(args_path).read_text()))
    result["self_maxrss_bytes"] = _vm_hwm()
    Path(out_path).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
