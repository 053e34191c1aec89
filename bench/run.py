"""`python -m bench.run [--quick] [--only NAME,...] [--out BENCHMARKS.md]`: run the benchmarks.

Each benchmark writes `<results>/<name>.json` (its numbers, the machine, the load average and
the exact command); the report is then rendered from every JSON present in `<results>`, so one
benchmark can be rerun alone without losing the others. `--quick` runs tiny sizes (what CI runs:
it checks that every benchmark works and that outputs agree, not the timings) into var/bench/,
leaving BENCHMARKS.md and bench/results/ alone. bench/reading.md (the hand-written reading of
the full results) is appended to the full report.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import behaviors, cache, cpt, ingest, pack, ranking, recommend
from bench.common import machine
from bench.report import render

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("behaviors", "ingest", "pack", "cpt", "ranking", "cache", "recommend")


def _pack_root(results: Path, work: Path, quick: bool) -> Path:
    """The run root pack left behind (blocks + tiny model); runs pack when there is none."""
    saved = results / "pack.json"
    if saved.is_file():
        root = Path(json.loads(saved.read_text())["result"]["root"])
        if (root / "gold" / "packed").is_dir():
            return root
    return Path(_run_one("pack", results, work, quick, None)["root"])


def _run_one(name: str, results: Path, work: Path, quick: bool, sizes: list[int] | None) -> dict[str, Any]:
    print(f"[bench] {name} ({'quick' if quick else 'full'}) ...", flush=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()
    t0 = time.perf_counter()
    sub = work / name
    if name in ("behaviors", "cache"):
        result = (behaviors if name == "behaviors" else cache).run(sub, quick, sizes)
    elif name == "cpt":
        result = cpt.run(sub, quick, _pack_root(results, work, quick))
    else:
        modules = {"ingest": ingest, "pack": pack, "ranking": ranking, "recommend": recommend}
        result = modules[name].run(sub, quick)
    command = f".venv/bin/python -m bench.run {'--quick ' if quick else ''}--only {name}"
    if sizes and name in ("behaviors", "cache"):
        command += f" --sizes {','.join(map(str, sizes))}"
    record = {
        "name": name,
        "quick": quick,
        "started_utc": started,
        "seconds": round(time.perf_counter() - t0, 1),
        "loadavg_start": [round(x, 2) for x in load],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "command": command,
        "machine": machine(),
        "result": result,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"[bench] {name}: done in {record['seconds']} s", flush=True)
    return result


def _sizes(text: str) -> list[int]:
    """`--sizes 1000000,10000000` → [1000000, 10000000] (positive integers)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return sorted(sizes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (< 10 min): checks the benchmarks work")
    p.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    p.add_argument("--out", type=Path, help="report path (default BENCHMARKS.md; quick: var/bench/)")
    p.add_argument("--results", type=Path, help="JSON/PNG dir (default bench/results; quick: var/bench/)")
    p.add_argument("--work", type=Path, help="scratch data dir (default var/bench/work[-quick])")
    p.add_argument(
        "--sizes",
        type=_sizes,
        help="behaviors and cache: interaction counts, e.g. 2000000 or 1000000,10000000 (behaviors "
        f"default 1 M, 10 M, 50 M, pandas and Polars up to {behaviors.REFERENCE_MAX:,}; cache 500 k)",
    )
    a = p.parse_args(argv)
    only = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        p.error(f"--only {unknown}: unknown benchmark(s); choose from {','.join(NAMES)}")
    tag = "quick" if a.quick else "full"
    out = a.out or (ROOT / "var" / "bench" / "BENCHMARKS-quick.md" if a.quick else ROOT / "BENCHMARKS.md")
    results = a.results or (
        ROOT / "var" / "bench" / "results-quick" if a.quick else ROOT / "bench" / "results"
    )
    work = (a.work or ROOT / "var" / "bench" / f"work-{tag}").resolve()
    for name in NAMES:
        if name in only:
            _run_one(name, results, work, a.quick, a.sizes)
    render(results, out, reading=None if a.quick else ROOT / "bench" / "reading.md")
    command = shlex.join([sys.executable, "-m", "bench.run", *(argv or sys.argv[1:])])
    print(f"[bench] report: {out}  (command: {command})")


if __name__ == "__main__":
    main()
