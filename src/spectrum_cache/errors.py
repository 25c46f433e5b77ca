"""The command line's error type and exit statuses.

A module of its own so that the CLI (cli.py) and the benchmark below it (bench/) raise and catch the
same class: cli.py imports bench, and nothing imports cli.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

FAILURE = 1
USAGE_ERROR = 2
# 128 + SIGINT, what shells report for a command stopped with Ctrl-C.
INTERRUPTED = 130


class CommandError(Exception):
    """A failure to report in one line, without a traceback; ``code`` is the exit status, ``cause`` the
    error behind it (its traceback is printed with --traceback)."""

    def __init__(self, message: str, code: int = FAILURE, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.cause = cause


def usage_error(message: str, cause: BaseException | None = None) -> CommandError:
    """A CommandError for bad input (exit status 2)."""
    return CommandError(message, USAGE_ERROR, cause)


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its class name where it has none: for one-line reports."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextlib.contextmanager
def exit_at_once_on_interrupt() -> Iterator[None]:
    """While active, Ctrl-C (SIGINT) ends the process at once with status 130 and one line.

    For start-up: imports and model loading. A KeyboardInterrupt raised inside a third-party import
    can be swallowed there and leave a half-imported module behind (numpy then fails with "cannot load
    module more than once per process" and a traceback). Nothing has been written yet at that point,
    so ending the process is safe. Afterwards Ctrl-C raises KeyboardInterrupt again, so sampling and
    writing unwind normally.
    """

    def end(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.write(2, b"spectrum-cache: interrupted\n")
        os._exit(INTERRUPTED)

    try:
        previous = signal.signal(signal.SIGINT, end)
    except ValueError:  # not the main thread (e.g. main() called from a worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
