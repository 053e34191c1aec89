"""Progress of a long loop: a rich bar on a terminal, else a few log lines.

A stage on a Prefect worker has no TTY, so it runs with `progress=False` and a bar would show
nothing. The same loop then logs at most `LINES` lines through this module's logger, which the
tasks route to the Prefect run log (tasks.common.library_logs_to_run_log), e.g.
"encode 3,000 items: 40% (1,200/3,000 items, 12.3 s)".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from rich.progress import Progress

log = logging.getLogger(__name__)
LINES = 10  # per loop: one line per tenth done


class ProgressLines:
    """Counts a loop of `total` units up; logs a line each time another 1/`lines` of it is done
    (at most `lines` lines, the last one at 100%)."""

    def __init__(self, label: str, total: int, unit: str, lines: int = LINES) -> None:
        self.label, self.total, self.unit, self.lines = label, total, unit, lines
        self.done = 0
        self.logged = 0
        self.started = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        """`n` more units done."""
        self.done += n
        reached = min(self.lines, self.done * self.lines // max(self.total, 1))
        if reached > self.logged:
            self.logged = reached
            log.info(
                "%s: %d%% (%s/%s %s, %.1f s)",
                self.label,
                100 * min(self.done, self.total) // max(self.total, 1),
                f"{self.done:,}",
                f"{self.total:,}",
                self.unit,
                time.perf_counter() - self.started,
            )


@contextlib.contextmanager
def progress_counter(label: str, total: int, unit: str, progress: bool) -> Iterator[Callable[[int], None]]:
    """An `advance(n)` for a loop of `total` units: a rich bar when `progress` (a terminal), else
    `ProgressLines`. The bar redraws on each advance only (no refresh thread: safe to fork under)."""
    if not progress:
        yield ProgressLines(label, total, unit).advance
        return
    with Progress(auto_refresh=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, advance=n, refresh=True)
