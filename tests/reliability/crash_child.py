"""Child process of tests/reliability/test_crash_recovery.py: run one data stage for real and stop
dead at a chosen point, so the parent can SIGKILL it there (no clean-up code can run).

    python crash_child.py <stage> <config.json> <pause point> <marker file> [tokenizer dir]

Pause points: `write:<artifact>:<n>` (after the n-th batch handed to that artifact's writer, i.e.
mid-write with its temp directory half full) or `swap:<artifact>` (inside replace_dir, after the
old artifact was renamed aside and before the new one is renamed into place: the worst instant).
At the pause the child writes its pid to the marker file and sleeps; it never resumes. With
CRASH_CHILD_RESUMABLE=1 it stops itself with SIGSTOP instead, so the parent can interleave
another run and then let this one finish (SIGCONT): a deterministic race.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from cprec_core import artifacts
from cprec_core.config import Config


def pause(marker: Path) -> None:
    """Tell the parent where we are, then wait for its SIGKILL."""
    tmp = marker.with_name(marker.name + ".part")
    tmp.write_text(str(os.getpid()))
    tmp.rename(marker)
    if os.environ.get("CRASH_CHILD_RESUMABLE") == "1":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    time.sleep(600)
    raise SystemExit("crash_child: never killed")


def install_pause(point: str, marker: Path) -> None:
    kind, _, rest = point.partition(":")
    if kind == "write":
        name, n = rest.rsplit(":", 1)
        original_write = artifacts.DatasetWriter.write
        seen = {"n": 0}

        def write(self: artifacts.DatasetWriter, table) -> None:
            original_write(self, table)
            if self.artifact.name == name and len(table):
                seen["n"] += 1
                if seen["n"] == int(n):
                    pause(marker)

        artifacts.DatasetWriter.write = write
    elif kind == "swap":
        original_rename = Path.rename

        def rename(self: Path, target):
            out = original_rename(self, target)
            if ".old-" in Path(target).name and Path(target).name.startswith(f".{rest}."):
                pause(marker)
            return out

        Path.rename = rename
    else:
        raise SystemExit(f"crash_child: unknown pause point {point!r}")


def run_stage(stage: str, cfg: Config, tokenizer_dir: str | Path | None) -> None:
    """Run one data stage (pack needs the tokenizer); also the parent's in-process rerun."""
    if stage == "ingest":
        from cprec_core.ingest.run import run_ingest

        run_ingest(cfg)
    elif stage == "behaviors":
        from cprec_core.behaviors import build_behaviors

        build_behaviors(cfg)
    elif stage == "corpus":
        from cprec_core.corpus import build_corpus

        build_corpus(cfg)
    elif stage == "pack":
        from cprec_core.pack import pack_corpus

        assert tokenizer_dir is not None
        pack_corpus(cfg, Path(tokenizer_dir))
    else:
        raise SystemExit(f"crash_child: unknown stage {stage!r}")


def main() -> None:
    stage, cfg_json, point, marker, *tok = sys.argv[1:]
    cfg = Config.model_validate_json(Path(cfg_json).read_text())
    install_pause(point, Path(marker))
    run_stage(stage, cfg, tok[0] if tok else None)
    print("crash_child: stage finished without reaching the pause point", flush=True)


if __name__ == "__main__":
    main()
