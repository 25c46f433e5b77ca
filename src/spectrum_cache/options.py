"""argparse options and option types shared by ``generate`` (cli.py) and ``bench`` (bench/cli.py).

Each raises ArgumentTypeError with what is allowed, so argparse prints "argument --steps: must be an
integer >= 1, got 'ten'" rather than the function's name.
"""

from __future__ import annotations

import argparse
import math

# torch.Generator.manual_seed takes seeds in [0, 2**64).
MAX_SEED = 2**64 - 1


def _int_in(text: str, low: int, high: float, allowed: str) -> int:
    """``text`` as an integer in [low, high], or an argparse error saying what is ``allowed``."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_in(text, 1, math.inf, "an integer >= 1")


def seed_int(text: str) -> int:
    """An integer in [0, 2**64): what torch.Generator.manual_seed accepts."""
    return _int_in(text, 0, MAX_SEED, "an integer from 0 to 2**64-1")


def finite_float(text: str) -> float:
    """A finite number (nan and inf would run and give nonsense)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def guidance_float(text: str) -> float:
    """A finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def shift_float(text: str) -> float:
    """A finite number > 0 (a scheduler's sigma shift)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v``: informational log messages of spectrum-cache and diffusers, not only warnings;
    ``--traceback``: the full traceback behind a one-line error (a model that does not load, say)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="also show informational messages")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, also print the traceback of what caused it (for a bug report)")
