"""The process the launcher starts: `python -m cprec_core.cpt.entry --spec <job.json>`.

Reads the job spec written by launcher.run_cpt; everything else is cpt.train's. After a clean
finish the process leaves with os._exit(0): multi-process gloo runs otherwise often abort at
interpreter exit ("terminate called without an active exception", STACK-NOTES).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

FAILED = "[cpt] FAILED on"


def main(argv: list[str] | None = None) -> None:
    """Parse `--spec`, run the job, exit 0 on success and 1 (with the traceback) on failure."""
    parser = argparse.ArgumentParser(prog="cprec_core.cpt.entry", description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="job spec JSON written by run_cpt")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
    )
    code = 0
    try:
        from cprec_core.cpt.train import JobSpec, train

        train(JobSpec.load(args.spec))
    except BaseException as e:
        traceback.print_exc()
        # One greppable line the launcher puts first in its error message.
        print(f"{FAILED} rank {os.environ.get('RANK', '?')}: {type(e).__name__}: {e}", flush=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
