"""Checks of numeric settings shared by the config and the schedule, with messages that name the setting."""

from __future__ import annotations

import math
import numbers


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int (numpy integers too), or a ValueError naming ``name`` and the allowed range."""
    # The number on the left of each comparison: numbers.Integral and numbers.Real declare only < and <=.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum or (
        maximum is not None and not value <= maximum
    ):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}.")
    return int(value)


def check_real(name: str, value: object, minimum: float, maximum: float = math.inf) -> float:
    """``value`` as a finite float (numpy numbers too), or a ValueError naming ``name`` and the range."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < minimum  # finite here, so these two are "not minimum <= value <= maximum"
        or not value <= maximum
    ):
        allowed = f"a finite number >= {minimum:.4g}" if maximum == math.inf else f"a number in [{minimum:.4g}, {maximum:.4g}]"
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")
    return float(value)
