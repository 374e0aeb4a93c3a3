"""
Envs described by a recipe, so that they can be built again where they run: in a Ray actor on
another machine, which cannot inherit the learner's ``VecEnv`` as a forked process does.

An :class:`EnvRecipe` builds the whole ``VecEnv`` stack, or the envs ``start_index, ...,
start_index + n_envs - 1`` of it for one shard, each env with the seed and rank it has in the
whole. :class:`VecEnvRecipe` takes the arguments of SB3's
:func:`~stable_baselines3.common.env_util.make_vec_env`, or a ``make_env(rank, seed)`` function of
the user's; the rl-zoo3 launcher has its own (:class:`sb3_apo.zoo.exp_manager.ZooEnvRecipe`). A
``VecEnv`` built by a recipe carries it as ``env_recipe``, so that it can be passed in place of the
recipe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecTransposeImage

from sb3_apo.common.checks import HyperparameterError

#: The attribute of a ``VecEnv`` that holds the recipe it was built from.
RECIPE_ATTRIBUTE = "env_recipe"


class _MakeEnv:
    """``make_env(rank, seed)`` as one env's constructor for a ``VecEnv`` (picklable, unlike a closure)."""

    def __init__(self, make_env: Callable[[int, int | None], gym.Env], rank: int, seed: int | None):
        self.make_env, self.rank, self.seed = make_env, rank, seed

    def __call__(self) -> gym.Env:
        return self.make_env(self.rank, self.seed)


class EnvRecipe(ABC):
    """
    A picklable description of a ``VecEnv`` that builds it, or a shard of it, wherever it runs.

    :ivar n_envs: the number of envs
    :ivar seed: the seed of the first env (env ``i`` gets ``seed + i``), or ``None``
    """

    n_envs: int
    seed: int | None

    @abstractmethod
    def _build(self, n_envs: int, start_index: int) -> VecEnv:
        """The ``VecEnv`` of the envs ``start_index`` to ``start_index + n_envs - 1``, as the whole stack wraps them."""

    def build(self, n_envs: int | None = None, start_index: int = 0) -> VecEnv:
        """
        Build the ``VecEnv``, or the shard of it made of the envs ``start_index`` to
        ``start_index + n_envs - 1`` (with the seeds and ranks those envs have in the whole).

        :param n_envs: the number of envs to build (default: all of them from ``start_index``)
        :param start_index: the index of the first env to build
        :return: the ``VecEnv``, which carries this recipe as ``env_recipe`` when it is the whole
        """
        n_envs = self.n_envs - start_index if n_envs is None else n_envs
        if not 0 <= start_index < start_index + n_envs <= self.n_envs:
            raise ValueError(f"Envs {start_index} to {start_index + n_envs - 1} are not among the recipe's {self.n_envs}.")
        venv = self._build(n_envs, start_index)
        if self.seed is not None:
            venv.seed(self.seed + start_index)  # make_vec_env seeds a shard's envs from seed, not seed + start_index
        if start_index == 0 and n_envs == self.n_envs:
            attach_recipe(venv, self)
        return venv


@dataclass(frozen=True)
class VecEnvRecipe(EnvRecipe):
    """
    How to build a ``VecEnv``: SB3's ``make_vec_env`` arguments, or a ``make_env(rank, seed)`` of
    the user's, and an optional wrapper of the ``VecEnv`` (e.g. ``VecNormalize``). Everything in it
    must be picklable (by cloudpickle: lambdas and functions defined in ``__main__`` are).

    :param env_id: the env id, or a callable that makes one env (``make_vec_env``'s ``env_id``);
        ``None`` with ``make_env``
    :param n_envs: the number of envs
    :param seed: the seed of the first env (env ``i`` gets ``seed + i``); the model's ``seed``, when
        given, takes its place as in SB3
    :param env_kwargs: keyword arguments of the env's constructor
    :param wrapper_class: a ``gym.Wrapper`` applied to each env (after ``Monitor``)
    :param wrapper_kwargs: its keyword arguments
    :param monitor_kwargs: keyword arguments of SB3's ``Monitor``
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``
    :param vec_env_kwargs: its keyword arguments
    :param make_env: ``make_env(rank, seed) -> gym.Env``, in place of ``env_id``: called with each
        env's index and the recipe's ``seed`` (not offset by the index)
    :param vec_env_wrapper: ``wrap(venv) -> VecEnv``, applied to the ``VecEnv`` (e.g.
        ``functools.partial(VecNormalize, gamma=0.99)``)
    """

    env_id: str | Callable[..., gym.Env] | None = None
    n_envs: int = 1
    seed: int | None = None
    env_kwargs: dict[str, Any] | None = None
    wrapper_class: Callable[..., gym.Env] | None = None
    wrapper_kwargs: dict[str, Any] | None = None
    monitor_kwargs: dict[str, Any] | None = None
    vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] | None = None
    vec_env_kwargs: dict[str, Any] | None = None
    make_env: Callable[[int, int | None], gym.Env] | None = None
    vec_env_wrapper: Callable[[VecEnv], VecEnv] | None = None

    def __post_init__(self) -> None:
        if (self.env_id is None) == (self.make_env is None):
            raise HyperparameterError("A VecEnvRecipe takes exactly one of `env_id` and `make_env`.")
        if isinstance(self.n_envs, bool) or not isinstance(self.n_envs, int) or self.n_envs < 1:
            raise HyperparameterError(f"`n_envs` of a VecEnvRecipe must be a positive integer, got {self.n_envs!r}.")

    def _build(self, n_envs: int, start_index: int) -> VecEnv:
        if self.make_env is not None:
            constructors = [_MakeEnv(self.make_env, rank, self.seed) for rank in range(start_index, start_index + n_envs)]
            vec_env_cls = self.vec_env_cls or DummyVecEnv
            venv: VecEnv = vec_env_cls(constructors, **(self.vec_env_kwargs or {}))  # type: ignore[arg-type]
        else:
            assert self.env_id is not None
            venv = make_vec_env(
                self.env_id,
                n_envs=n_envs,
                seed=self.seed,
                start_index=start_index,
                env_kwargs=self.env_kwargs,
                wrapper_class=self.wrapper_class,
                wrapper_kwargs=self.wrapper_kwargs,
                monitor_kwargs=self.monitor_kwargs,
                vec_env_cls=self.vec_env_cls,
                vec_env_kwargs=self.vec_env_kwargs,
            )
        if self.vec_env_wrapper is not None:
            venv = self.vec_env_wrapper(venv)
        return venv


def attach_recipe(env: VecEnv, recipe: EnvRecipe) -> None:
    """Mark ``env`` as built by ``recipe`` (which builds the whole stack, ``env`` itself)."""
    setattr(env, RECIPE_ATTRIBUTE, recipe)


def recipe_of(env: Any) -> EnvRecipe | None:
    """
    The recipe that ``env`` was built from, if it carries one itself. A wrapper added on top of a
    built ``VecEnv`` hides it, since the recipe would build the env without that wrapper; but for
    the ``VecTransposeImage`` that SB3 adds to image envs, which is added to a rebuilt env too.
    """
    while isinstance(env, VecTransposeImage) and RECIPE_ATTRIBUTE not in vars(env):
        env = env.venv
    recipe = vars(env).get(RECIPE_ATTRIBUTE) if hasattr(env, "__dict__") else None
    return recipe if isinstance(recipe, EnvRecipe) else None
