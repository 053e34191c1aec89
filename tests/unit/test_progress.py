"""cprec_core/progress.py: a loop's progress as a bar on a terminal, else a few log lines."""

from __future__ import annotations

import logging

import pytest

from cprec_core.progress import LINES, progress_counter


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cprec_core.progress"]


def test_without_a_bar_a_loop_logs_one_line_per_tenth_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cprec_core.progress")
    with progress_counter("encode 3,000 items", 3000, "items", progress=False) as advance:
        for _ in range(0, 3000, 7):
            advance(7)  # 429 steps, the last one past the total
    lines = _lines(caplog)
    assert len(lines) == LINES == 10
    assert lines[0].startswith("encode 3,000 items: 10% (301/3,000 items, ")
    assert lines[3].startswith("encode 3,000 items: 40% (1,204/3,000 items, ")
    assert lines[-1].startswith("encode 3,000 items: 100% (3,003/3,000 items, ")
    assert all(line.endswith(" s)") for line in lines)


def test_a_short_loop_logs_at_most_one_line_per_step(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cprec_core.progress")
    with progress_counter("tokenize", 3, "documents", progress=False) as advance:
        for _ in range(3):
            advance(1)
    assert [line.split(" (")[0] for line in _lines(caplog)] == [
        "tokenize: 33%",
        "tokenize: 66%",
        "tokenize: 100%",
    ]


def test_with_a_bar_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cprec_core.progress")
    with progress_counter("tokenize", 100, "documents", progress=True) as advance:
        for _ in range(100):
            advance(1)
    assert _lines(caplog) == []
