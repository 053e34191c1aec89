"""Convert shared/data (research-only Amazon sets) into cprec's generic raw layout.

    .venv/bin/python bench/realdata/prepare.py --data ../shared/data --out var/raw/realdata

The same as `cprec prepare-realdata`; the logic lives in cprec_core/realdata.py, whose last lines
hold the counts this printed on the real data. The output folder is git-ignored: the data's terms
allow research use only, so it never enters the repository.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cprec_core.realdata import RealDataError, prepare_realdata

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """--data, --out, --quiet."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared/data folder"
    )
    p.add_argument("--out", type=Path, default=Path("var/raw/realdata"), help="generic-layout output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the conversion and print one line of counts per domain; exit 1 on a format error."""
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        counts = prepare_realdata(args.data, args.out, progress=not args.quiet)
    except RealDataError as e:
        print(f"error: {e}")
        return 1
    for domain, c in counts.items():
        print(
            f"{domain:<11} users {c['users']:>7,}  items {c['items']:>6,} (catalogue {c['catalogue']:>6,})  "
            f"interactions {c['interactions']:>8,}"
        )
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
