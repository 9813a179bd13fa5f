"""Argument checking shared by the public API: one path, one exception type per kind of mistake.

``TypeError`` when a value has the wrong type (a ``str`` where an ``int`` belongs), ``ValueError``
when it has the right type but a bad value (a negative count, an unknown choice). Messages name
the argument and the value received.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi)``; bools and floats are refused (a float position is a bug)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v >= hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi})" if lo is not None else f"< {hi}"
        raise ValueError(f"{name} must be an int {bounds}, got {v}")
    return v


def check_optional_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int | None:
    """``None``, or ``value`` checked as by :func:`check_int`."""
    if value is None:
        return None
    try:
        return check_int(name, value, lo, hi)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace(f"{name} must be", f"{name} must be None or", 1)) from None


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {describe(value)}")
    return bool(value)


def check_list(name: str, value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list, got {describe(value)}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(value)}")
    return list(value)


def check_float_list(name: str, value: Any, length: int) -> list[float]:
    out = check_list(name, value, length)
    for i, x in enumerate(out):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}[{i}] must be a number, got {describe(x)}")
    return [float(x) for x in out]


def check_int_list(
    name: str, value: Any, length: int | None = None, lo: int | None = None, hi: int | None = None
) -> list[int]:
    out = check_list(name, value, length)
    return [check_int(f"{name}[{i}]", x, lo, hi) for i, x in enumerate(out)]
