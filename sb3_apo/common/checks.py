"""Validation of hyperparameters: every failure names the parameter and what it accepts."""

import math
from collections.abc import Iterable
from typing import Any


def check_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
    allow_schedule: bool = False,
) -> None:
    """
    Raise ``ValueError`` unless ``value`` lies in the interval from ``low`` to ``high``.

    :param name: the public name of the parameter, quoted in the error
    :param value: the value given by the user
    :param low: the lower bound
    :param high: the upper bound
    :param low_open: exclude ``low`` itself
    :param high_open: exclude ``high`` itself
    :param integer: the value must be an integer
    :param allow_none: ``None`` is accepted (it switches the feature off)
    :param allow_schedule: a callable (a schedule of the remaining progress) is accepted
    """
    if value is None and allow_none:
        return
    if allow_schedule and callable(value):
        return
    low_open, high_open = low_open or math.isinf(low), high_open or math.isinf(high)  # inf itself is never accepted
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    kind = "an integer" if integer else "a number"
    extras = [text for text, allowed in (("None", allow_none), ("a schedule", allow_schedule)) if allowed]
    accepted = " or ".join([f"{kind} in {interval}", *extras])
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (integer and not float(value).is_integer()) or math.isnan(value):
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}.")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}.")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(choice) for choice in choices)}, got {value!r}.")
