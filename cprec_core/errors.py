"""The base class of every error a user can fix (bad input, config or state)."""

from __future__ import annotations


class UserError(Exception):
    """Its message is one line that names the file, row, field or config key and what to do; the
    CLI prints it as `error: <message>` and exits 2 (anything else is a bug and keeps its traceback)."""
