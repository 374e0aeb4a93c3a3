"""
The one use of a private attribute of torch in the algorithms.

``torch.distributions`` checks the arguments of every distribution it builds, and the
samples given to its ``log_prob()``, while ``Distribution`` validation is on (the default
unless Python runs with ``-O``). SB3's policies build a distribution at every rollout
step and on every minibatch, so that on Hopper-v5 these checks cost about 3% of SB3's
PPO's training time (``results/speed/micro/validation.txt``). The loop checks its inputs itself, once, with
messages that name the cause (non-finite observations at every step, non-finite rollout
arrays before each update, non-finite loss terms and gradients on every minibatch), so
it runs its rollouts and updates with the checks off, as rsl_rl and RLlib do; the user's
setting applies again in the callbacks a rollout calls, and after each rollout and update.

torch offers :meth:`~torch.distributions.Distribution.set_default_validate_args` but no
getter: the current default is read from the class attribute ``Distribution._validate_args``,
which torch has kept, with that meaning, since it made validation the default (1.8). Tested
with torch 2.13 (``.ci/constraints.txt``); ``tests/test_hardening_api.py`` checks it.
"""

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from torch.distributions import Distribution

_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


@contextlib.contextmanager
def distribution_validation(enabled: bool) -> Iterator[bool]:
    """
    Set torch's default distribution argument validation for the block, then restore the
    default it had (also when the block raises).

    :param enabled: the setting within the block
    :return: (as the ``with`` target) the setting before the block, the user's
    """
    previous = bool(Distribution._validate_args)
    Distribution.set_default_validate_args(enabled)
    try:
        yield previous
    finally:
        Distribution.set_default_validate_args(previous)


def without_distribution_validation(method: Callable[_Params, _Result]) -> Callable[_Params, _Result]:
    """
    Run ``method`` with torch's distribution argument validation off (:func:`distribution_validation`).

    :param method: the function to wrap
    :return: the wrapped function
    """

    @functools.wraps(method)
    def wrapped(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        with distribution_validation(False):
            return method(*args, **kwargs)

    return wrapped
