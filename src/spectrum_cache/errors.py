"""The command line's error type and exit statuses.

A module of its own so that the CLI (cli.py) and the benchmark below it (bench/) raise and catch the
same class: cli.py imports bench, and nothing imports cli.py.
"""

from __future__ import annotations

SUCCESS = 0
FAILURE = 1
USAGE_ERROR = 2
# 128 + SIGINT, what shells report for a command stopped with Ctrl-C.
INTERRUPTED = 130


class CommandError(Exception):
    """A failure to report in one line, without a traceback; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> CommandError:
    """A CommandError for bad input (exit status 2)."""
    return CommandError(message, USAGE_ERROR)
