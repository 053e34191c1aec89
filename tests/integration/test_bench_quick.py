"""`python -m bench.run --quick` works end to end: every benchmark runs at its tiny size, every
outputs-agree check passes (a disagreement raises, so the run would fail), and the report names
each benchmark. Timings are NOT asserted: CI machines are too noisy for that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmarks_run_and_agree(tmp_path: Path) -> None:
    out, results = tmp_path / "BENCH.md", tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)]
    cmd += ["--results", str(results), "--work", str(tmp_path / "work")]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=1800)

    rec = {
        n: json.loads((results / f"{n}.json").read_text())["result"]
        for n in ("behaviors", "ingest", "pack", "cpt", "ranking", "cache", "recommend")
    }
    for size in rec["behaviors"]["sizes"]:
        assert all(size["identical"].values())  # every reference produced the project's silver.events
        project_rows = size["contenders"]["project"]["rows"]
        assert project_rows > 0 and all(c["rows"] == project_rows for c in size["contenders"].values())
    assert "pandas" in rec["behaviors"]["sizes"][0]["contenders"]
    # every reader saw every line of the files
    rows = {c["rows"] for c in rec["ingest"]["contenders"].values()}
    assert len(rows) == 1 and rows.pop() > rec["ingest"]["interactions"]
    generic = rec["ingest"]["generic_parquet"]  # the kept interactions, as the generic layout, all kept
    assert generic["rows"] == generic["kept"] > 0.9 * rec["ingest"]["interactions"]
    assert 0 <= rec["pack"]["waste_pct"] < 100 and rec["pack"]["tokens"] > 0
    assert rec["cpt"]["tiny"]["contenders"]["deepspeed"]["tokens_per_s"] > 0
    assert rec["ranking"]["identical"] is True
    assert (
        rec["recommend"]["identical"] is True and rec["recommend"]["contenders"]["project"]["users_per_s"] > 0
    )
    (cache,) = rec["cache"]["sizes"]
    runs = cache["runs"]
    assert set(runs) == {"cold", "rerun", "refresh0", "refresh:Grocery", "refresh:Toys", "dask"}
    for domain, refresh in cache["refreshes"].items():
        assert refresh["refreshed"] == [domain]  # only that domain re-ingested
        assert refresh["rebuilt"] == [domain]  # ... and rebuilt by behaviors' SQL
    # new logs of the downstream domain leave the corpus as it was; a pretrain domain's change it
    assert cache["refreshes"]["Grocery"]["status"] == "corpus-unchanged"
    assert cache["refreshes"]["Toys"]["status"] == "updated"
    toys = cache["refreshes"]["Toys"]
    assert 0 < toys["mixed_events_of_its_users"] <= 1 and 0 < toys["reach"] < 1
    assert runs["rerun"]["seconds"] < runs["cold"]["seconds"]  # every stage a cache hit

    report = out.read_text()
    for title in (
        "1. behaviors",
        "2. ingest",
        "3. corpus render",
        "4. CPT",
        "5. full-ranking",
        "6. stage cache",
        "7. top-K recommendations",
    ):
        assert title in report
    assert (results / "behaviors_scaling.png").stat().st_size > 0
