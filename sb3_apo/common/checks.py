"""
Validation of hyperparameters: every failure names the parameter and what it accepts.

Every failure raises :class:`HyperparameterError`, a ``ValueError`` that is also an
``AssertionError``: SB3's ``PPO`` checks some hyperparameters with ``assert`` (a
``batch_size`` of 1 with advantage normalisation, a rollout of one sample, a
non-positive ``clip_range_vf``), so code written against it, which catches
``AssertionError``, keeps working.
"""

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np


class HyperparameterError(ValueError, AssertionError):
    """
    An invalid hyperparameter. A ``ValueError``, and an ``AssertionError`` like the
    ``assert`` checks of SB3's ``PPO``, so that ``except AssertionError`` written for
    ``PPO`` catches it too.
    """


_Value = TypeVar("_Value")


def python_float(value: _Value) -> _Value | float:
    """``value`` as a Python ``float`` if it is a real number of any type (``np.float32(3e-4)``), else unchanged."""
    return float(value) if isinstance(value, numbers.Real) else value


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (Python's or numpy's), booleans excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_range(
    name: str,
    value: Any,
    /,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
    allow_schedule: bool = False,
    allow_inf: bool = False,
) -> None:
    """
    Raise :class:`HyperparameterError` unless ``value`` lies in the interval from ``low`` to ``high``.

    Any real number type is accepted (``int``, ``float``, numpy's scalars such as
    ``np.float32``), and where an integer is expected any integral type
    (``int``, ``np.int64``, any :class:`numbers.Integral`); booleans are not numbers here.

    :param name: the public name of the parameter, quoted in the error
    :param value: the value given by the user
    :param low: the lower bound
    :param high: the upper bound
    :param low_open: exclude ``low`` itself
    :param high_open: exclude ``high`` itself
    :param integer: the value must be an integer
    :param allow_none: ``None`` is accepted (it switches the feature off)
    :param allow_schedule: a callable (a schedule of the remaining progress) is accepted
    :param allow_inf: an infinite ``high`` is itself accepted (e.g. ``max_grad_norm=inf``: no clipping)
    """
    if value is None and allow_none:
        return
    if allow_schedule and callable(value):
        return
    # inf itself is accepted only where allow_inf says so
    low_open, high_open = low_open or math.isinf(low), high_open or (math.isinf(high) and not allow_inf)
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    kind = "an integer" if integer else "a number"
    extras = [text for text, allowed in (("None", allow_none), ("a schedule", allow_schedule)) if allowed]
    accepted = " or ".join([f"{kind} in {interval}", *extras])
    valid_type = _is_number(value) and (isinstance(value, numbers.Integral) or not integer)
    if not valid_type or math.isnan(value):
        raise HyperparameterError(f"`{name}` must be {accepted}, got {value!r}.")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise HyperparameterError(f"`{name}` must be {accepted}, got {value!r}.")


def check_bool(name: str, value: Any) -> None:
    """
    Raise :class:`HyperparameterError` unless ``value`` is a boolean (``bool`` or ``np.bool_``).

    Strings such as ``"false"`` are refused: ``bool("false")`` is ``True``.

    :param name: the public name of the parameter, quoted in the error
    :param value: the value given by the user
    """
    if not isinstance(value, (bool, np.bool_)):
        raise HyperparameterError(f"`{name}` must be True or False, got {value!r}.")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise :class:`HyperparameterError` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise HyperparameterError(f"`{name}` must be one of {', '.join(repr(choice) for choice in choices)}, got {value!r}.")


def check_schedule_value(name: str, schedule: Callable[[float], Any] | float, progress_remaining: float) -> float:
    """
    Evaluate a schedule and raise :class:`HyperparameterError` unless it gives a finite number >= 0.

    A constant given for a scheduled parameter is a schedule too (SB3 wraps it), so
    the check covers both. 0 is accepted: linear schedules reach it at the end of training.

    :param name: the public name of the scheduled parameter, quoted in the error
    :param schedule: the schedule, a function of the remaining progress (from 1 to 0); a number
        (set in place of a schedule after the model was set up) is refused
    :param progress_remaining: where to evaluate it
    :return: the schedule's value, as a ``float``
    """
    if not callable(schedule):
        raise HyperparameterError(
            f"`{name}` must be a schedule (a function of the remaining progress) once the model is set up, got {schedule!r}."
        )
    try:
        value = schedule(progress_remaining)
    except (TypeError, ValueError) as error:  # e.g. SB3's FloatSchedule calling float() on a string
        raise HyperparameterError(
            f"The schedule of `{name}` must return a number, but failed at remaining progress {progress_remaining:g}: {error}"
        ) from error
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise HyperparameterError(
            f"The schedule of `{name}` must return a finite number in [0, inf), got {value!r} at remaining "
            f"progress {progress_remaining:g}."
        )
    return float(value)


#: The check of one hyperparameter: called with the parameter's public name and its value, it raises
#: :class:`HyperparameterError` naming both and the accepted values.
Check = Callable[[str, Any], None]


def in_range(low: float = -math.inf, high: float = math.inf, **options: bool) -> Check:
    """The :data:`Check` of :func:`check_range` with these bounds and options."""
    return functools.partial(check_range, low=low, high=high, **options)


def one_of(*choices: Any) -> Check:
    """The :data:`Check` of :func:`check_choice` with these choices."""
    return lambda name, value: check_choice(name, value, choices)


def check_options(name: str, value: Any) -> None:
    """Raise :class:`HyperparameterError` unless ``value`` is ``None`` or a dict with string keys (keyword arguments)."""
    if value is not None and not (isinstance(value, dict) and all(isinstance(key, str) for key in value)):
        raise HyperparameterError(f"`{name}` must be a dict of keyword arguments or None, got {value!r}.")


def subclass_of(base: type, what: str) -> Check:
    """
    The :data:`Check` of a class parameter: ``None`` or a subclass of ``base``.

    :param base: the class the value must derive from
    :param what: what such a class does, quoted in the error (e.g. "store distribution parameters")
    """

    def check(name: str, value: Any) -> None:
        if value is not None and not (isinstance(value, type) and issubclass(value, base)):
            raise HyperparameterError(
                f"`{name}` must {what} (a subclass of {base.__module__}.{base.__qualname__}), or be None; got {value!r}."
            )

    return check


def renamed_keyword(owner: str, old: str, new: str) -> None:
    """
    Warn (``DeprecationWarning``) that ``owner``'s keyword ``old`` is now called ``new``; the caller maps it.

    :param owner: the class or function whose keyword was renamed, quoted in the warning
    :param old: the former name
    :param new: the name to use
    """
    warnings.warn(f"{owner}: `{old}` is deprecated and will be removed; use `{new}`.", DeprecationWarning, stacklevel=3)
