"""
The PPO-family training loop, written once.

:class:`PPOFamilyAlgorithm` does everything SB3's ``PPO.train()`` does
(minibatches, advantage normalisation, clipped or unclipped value loss,
entropy bonus, gradient clipping, ``target_kl`` early stopping, schedules and
logging) and measures the diagnostics of the APO paper. A subclass states only
its policy objective, :meth:`PPOFamilyAlgorithm.policy_loss`, and keeps its
own state in :meth:`PPOFamilyAlgorithm._after_policy_update`.
"""

import contextlib
import functools
import math
import multiprocessing as mp
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_apo.common import diagnostics as update_diagnostics
from sb3_apo.common._torch_compat import distribution_validation, without_distribution_validation
from sb3_apo.common.buffers import DistributionParamsMixin, anchored_buffer_class
from sb3_apo.common.checks import (
    Check,
    HyperparameterError,
    check_bool,
    check_options,
    check_range,
    check_schedule_value,
    in_range,
    one_of,
    python_float,
    renamed_keyword,
    subclass_of,
)
from sb3_apo.common.distributions import SUPPORTED_ACTION_SPACES, AnchorSet, DistributionMath, distribution_math
from sb3_apo.common.env_recipe import EnvRecipe, VecEnvRecipe, recipe_of
from sb3_apo.common.loading import CrossAlgorithmLoading
from sb3_apo.common.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

#: Spawn keys of the seed sequences of the anchor generators (loss, diagnostics).
ANCHOR_STREAM, DIAGNOSTICS_STREAM = 0xA4C0, 0xD1A6

SelfPPOFamilyAlgorithm = TypeVar("SelfPPOFamilyAlgorithm", bound="PPOFamilyAlgorithm")


def _async_rollouts() -> Any:
    """
    The asynchronous-rollouts subsystem (:mod:`sb3_apo.async_rollouts`), imported here and nowhere
    else in this package's lower layers: the loop owns its :class:`AsyncLearner` as SB3's owns its
    rollout buffer, and synchronous training never loads it.
    """
    import sb3_apo.async_rollouts

    return sb3_apo.async_rollouts


class NonFiniteLossError(ValueError):
    """
    A loss term or the gradient became inf or NaN, or the rollout's rewards,
    values, returns or advantages are; the update was not applied. Its message
    names the cause and the advice that fits it.

    It is a ``ValueError`` so that rl-zoo3's Optuna objective prunes the trial
    instead of stopping the whole study.
    """


class NonFiniteObservationError(ValueError):
    """
    The environment returned an observation with inf or NaN, which the policy
    cannot act on. A ``ValueError``, like :class:`NonFiniteLossError`.
    """


class _RolloutCallback:
    """
    The callback that a rollout (SB3's ``collect_rollouts``, or the replay of an asynchronous
    rollout) is given: the rollout's own callback, whose every step first checks the
    observations the environment just returned, and whose calls run as in SB3's loop, outside
    torch's inference mode and with the user's setting of torch's distribution argument
    validation, which the rollout itself runs in and without (``sb3_apo/common/_torch_compat.py``).
    It forwards all else, so that the callbacks see what they would see without it.

    :param callback: the rollout's callback
    :param check: raises if a step's observations (``new_obs``) are not finite; called as
        ``check(observation, env_index)`` for the terminal observation of a truncated episode,
        which SB3's loop bootstraps from
    :param validate_args: the validation setting the callbacks run with
    """

    def __init__(self, callback: BaseCallback, check: Callable[..., None], validate_args: bool):
        self.callback, self.check, self.validate_args = callback, check, validate_args
        self.step_locals: dict[str, Any] = {}

    def _as_in_sb3(self, call: Callable[[], Any]) -> Any:
        # A callback may train a module of its own (curiosity, RND). The rollout runs with validation
        # off: only a user who has it on needs a switch.
        users_validation = distribution_validation(True) if self.validate_args else contextlib.nullcontext()
        with th.inference_mode(False), users_validation:
            return call()

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.step_locals = locals_
        self.callback.update_locals(locals_)

    def on_step(self) -> bool:
        self.check(self.step_locals["new_obs"])
        dones, infos = self.step_locals["dones"], self.step_locals["infos"]
        for env_index in np.flatnonzero(dones):  # the terminal observations that SB3's loop will bootstrap from
            terminal = infos[env_index].get("terminal_observation")
            if terminal is not None and infos[env_index].get("TimeLimit.truncated", False):
                self.check(terminal, int(env_index))
        return self._as_in_sb3(self.callback.on_step)

    def on_rollout_start(self) -> None:
        self._as_in_sb3(self.callback.on_rollout_start)

    def on_rollout_end(self) -> None:
        self._as_in_sb3(self.callback.on_rollout_end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.callback, name)


@dataclass
class Minibatch:
    """
    Everything an objective needs about one minibatch. The quantities that cost
    something (the new distribution's parameters, exact KL, anchors) are
    computed on first use and then cached.

    :param advantages: advantages ``A`` (normalised if ``normalize_advantage``)
    :param log_ratio: ``log r(a|s)`` of the executed actions
    :param ratio: ``r(a|s) = exp(log_ratio)``
    :param old_log_prob: ``log pi_old(a|s)``
    :param actions: the executed actions as stored in the buffer
    :param old_params: ``pi_old``'s distribution parameters
    :param distribution: ``pi``'s SB3 distribution on these states (with gradient)
    :param clip_range: the current ``clip_range`` (``None`` when unused)
    :param math: the distribution maths of the action space
    :param generator: the random generator anchors are drawn from
    :param samples: the rollout buffer's samples of this minibatch, for objectives that
        need more of them (e.g. a buffer subclass's extra fields)
    :param importance_weights: with asynchronous rollouts, the truncated importance weights
        ``w = min(pi_prox(a|s) / pi_b(a|s), c)`` of the samples; ``advantages`` already
        carries them (it is ``w * A``), so that every advantage-weighted term of every
        objective is weighted once. ``None`` for synchronous rollouts (``w = 1``)
    """

    advantages: th.Tensor
    log_ratio: th.Tensor
    ratio: th.Tensor
    old_log_prob: th.Tensor
    actions: th.Tensor
    old_params: th.Tensor
    distribution: Distribution
    clip_range: float | None
    math: DistributionMath
    generator: th.Generator
    samples: Any
    importance_weights: th.Tensor | None = None

    @functools.cached_property
    def new_params(self) -> th.Tensor:
        return self.math.params(self.distribution)

    @functools.cached_property
    def kl(self) -> th.Tensor:
        """Exact ``KL(pi_old(.|s) || pi(.|s))`` per state."""
        return self.math.kl_to(self.old_params, self.distribution)

    def anchors(self, n_anchor_actions: int) -> AnchorSet:
        """
        The anchor set of APO's chi-square penalty (``docs/algorithms.md``), drawn from ``generator``.

        :param n_anchor_actions: K, anchor actions drawn per state where the family samples them (Box)
        """
        return self.math.anchors(self.old_params, self.new_params, self.actions, n_anchor_actions, self.generator)

    def anchor_penalty(self, n_anchor_actions: int) -> th.Tensor:
        """
        APO's penalty ``anchors(n_anchor_actions).chi2_penalty()``, from the same draws, by the family's fastest form.

        :param n_anchor_actions: K, anchor actions drawn per state where the family samples them (Box)
        """
        return self.math.anchor_penalty(self.old_params, self.distribution, self.actions, n_anchor_actions, self.generator)


def clipped_surrogate(ratio: th.Tensor, advantages: th.Tensor, clip_range: float) -> th.Tensor:
    """PPO-clip: ``-mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A))``."""
    return -th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)).mean()


class PPOFamilyAlgorithm(CrossAlgorithmLoading, OnPolicyAlgorithm):
    """
    Base class of the PPO-family algorithms: SB3's ``PPO`` training loop with a
    pluggable policy objective, the old policy's distribution parameters in
    every minibatch, and the diagnostics of the APO paper.

    Parameters shared with SB3's ``PPO`` come first, in ``PPO``'s order, with the same names,
    defaults and meaning; the family's own follow.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, or a schedule of the remaining progress (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size (as in SB3's ``PPO``, one that does not divide ``n_steps * n_envs``,
        or exceeds it, gives a warning)
    :param n_epochs: Number of epochs when optimizing the loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter ``eps``, or a schedule; ``None`` where the objective has no clipping
    :param clip_range_vf: Clipping parameter for the value function; ``None`` (default): no value clipping
    :param normalize_advantage: Whether to normalize the advantage per minibatch
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping (``inf``: no clipping)
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param rollout_buffer_class: Rollout buffer class to use; it must store distribution parameters
        (a subclass of :class:`sb3_apo.common.buffers.DistributionParamsMixin`). ``None``: chosen automatically
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Stop the epochs of an update early when the approximate KL exceeds ``1.5 * target_kl``
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param diagnostic_anchor_actions: K, the anchor actions drawn per state for a Box action space in the
        anchor-ratio diagnostics measured after each update (``train/anchor_ratio_max``, ``train/anchor_ratio_dev``)
    :param diagnostics_freq: measure the diagnostics (``train/kl``, ``train/ratio_max``,
        ``train/anchor_ratio_max`` ...) after every ``diagnostics_freq``-th update only (1: after every
        update; the measurement costs one forward pass over the rollout). An algorithm whose state
        adapts to them (PPOPenalty's adaptive ``beta``) measures after every update regardless
        (:meth:`PPOFamilyAlgorithm._diagnostics_needed`); ``_after_policy_update`` runs after the
        updates that were measured
    :param async_rollouts: Collect the next rollout in an actor process while the learner trains on the
        current one (decoupled PPO, see ``docs/async.md``); ``False``: SB3's synchronous loop, unchanged
    :param max_policy_lag: With ``async_rollouts``, the number of updates the policy that collected a
        rollout is behind the policy trained on it (0: no overlap, the synchronous update)
    :param n_actors: With ``async_rollouts``, the number of actor processes; above 1, each steps its own
        contiguous share of the envs (a ``DummyVecEnv``, optionally in ``VecNormalize``), and their
        rollouts are joined into one (see ``docs/async.md``). An env given by its id is made with one env
        per actor
    :param actor_backend: With ``async_rollouts``, where the actors run: ``"fork"``, processes forked from
        this one, which step its ``VecEnv``; ``"ray"``, Ray actors anywhere on the cluster that
        ``ray.init()`` reaches (``RAY_ADDRESS``; without it, a local instance started and stopped here),
        which build their envs from a recipe: pass ``env`` as an env id or a
        :class:`~sb3_apo.common.env_recipe.VecEnvRecipe` (see ``docs/async.md``)
    :param ray_actor_options: With ``actor_backend="ray"``, the options of each Ray actor
        (``ray.remote``'s: e.g. ``{"num_cpus": 1, "resources": {"simulator": 1}}``)
    :param importance_weight_max: With ``async_rollouts``, ``c``, the truncation of the importance weights
        ``min(pi_prox(a|s) / pi_b(a|s), c)`` of the policy-gradient term
    :param value_targets: With ``async_rollouts``, the value targets and advantages of a lagged rollout:
        ``"gae"``, GAE from the values recorded by the actor; ``"vtrace"``, V-trace from the learner's values
    :param correct_policy_lag: With ``async_rollouts``, whether a lagged rollout is corrected (decoupled PPO:
        the learner's policy is ``pi_old`` and the policy gradient is weighted by ``w``). ``False``: the
        rollout is trained on as if it were on-policy, with the behaviour policy as ``pi_old`` and no
        weights, as Cogment-verse's asynchronous PPO does; for comparisons, not recommended
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    #: The action spaces the algorithm accepts.
    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = SUPPORTED_ACTION_SPACES
    #: The checks of the hyperparameters every algorithm of the family has (SB3's ``PPO``'s and the
    #: family's), by public name: the constructor and ``load()`` run the same ones
    #: (:meth:`check_hyperparameters`). ``batch_size`` is at least 2 with ``normalize_advantage``
    #: (:meth:`_check_combinations`); ``clip_range`` may be ``None`` only where ``needs_clip_range`` is false.
    shared_hyperparameters: ClassVar[dict[str, Check]] = {
        "learning_rate": in_range(0, allow_schedule=True),
        "n_steps": in_range(1, integer=True),
        "batch_size": in_range(1, integer=True),
        "n_epochs": in_range(1, integer=True),
        "gamma": in_range(0, 1),
        "gae_lambda": in_range(0, 1),
        "clip_range": in_range(0, low_open=True, allow_schedule=True, allow_none=True),
        "clip_range_vf": in_range(0, low_open=True, allow_schedule=True, allow_none=True),
        "normalize_advantage": check_bool,
        "ent_coef": in_range(0),
        "vf_coef": in_range(0),
        "max_grad_norm": in_range(0, low_open=True, allow_inf=True),
        "use_sde": check_bool,
        "sde_sample_freq": in_range(-1, integer=True),
        "rollout_buffer_class": subclass_of(DistributionParamsMixin, "store distribution parameters"),
        "target_kl": in_range(0, low_open=True, allow_none=True),
        "stats_window_size": in_range(1, integer=True),
        "diagnostic_anchor_actions": in_range(1, integer=True),
        "diagnostics_freq": in_range(1, integer=True),
        "async_rollouts": check_bool,
        "max_policy_lag": in_range(0, integer=True),
        "n_actors": in_range(1, integer=True),
        "actor_backend": one_of("fork", "ray"),
        "ray_actor_options": check_options,
        "importance_weight_max": in_range(0, low_open=True),
        "value_targets": one_of("gae", "vtrace"),
        "correct_policy_lag": check_bool,
    }
    #: Whether the objective needs a ``clip_range`` (PPOPenalty's may be ``None``).
    needs_clip_range: ClassVar[bool] = True
    #: Keywords renamed since, still accepted with a ``DeprecationWarning`` (former name: name).
    renamed_keywords: ClassVar[dict[str, str]] = {}

    #: A buffer that keeps ``pi_old``'s distribution parameters (``rollout_buffer_class`` is checked to make one).
    rollout_buffer: DistributionParamsMixin
    policy: ActorCriticPolicy

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | EnvRecipe,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule | None = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        diagnostic_anchor_actions: int = 2,
        diagnostics_freq: int = 1,
        async_rollouts: bool = False,
        max_policy_lag: int = 1,
        n_actors: int = 1,
        importance_weight_max: float = 1.0,
        value_targets: str = "gae",
        correct_policy_lag: bool = True,
        actor_backend: str = "fork",
        ray_actor_options: dict[str, Any] | None = None,
        _init_setup_model: bool = True,
    ):
        # Every shared hyperparameter, by its name, before the environment is built
        self.check_hyperparameters({name: value for name, value in locals().items() if name in self.shared_hyperparameters})
        gym_env, env_recipe = self._env_and_recipe(env, async_rollouts, n_actors)
        # SB3's FloatSchedule takes Python numbers and callables only: np.float32(3e-4) becomes 3e-4
        learning_rate = python_float(learning_rate)
        clip_range, clip_range_vf = python_float(clip_range), python_float(clip_range_vf)

        super().__init__(
            policy,
            gym_env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=None,  # checked below, with a ValueError that lists the accepted spaces
        )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.diagnostic_anchor_actions = diagnostic_anchor_actions
        self.async_rollouts = async_rollouts
        self.max_policy_lag = max_policy_lag
        self.n_actors = n_actors
        self.importance_weight_max = importance_weight_max
        self.value_targets = value_targets
        self.correct_policy_lag = correct_policy_lag
        self.actor_backend = actor_backend
        self.ray_actor_options = ray_actor_options
        #: The recipe the env was built from (``None``: not known), from which Ray actors build theirs.
        self.env_recipe = env_recipe
        self._async_learner: Any = None  # an AsyncLearner, made at the first asynchronous rollout
        self.diagnostics_freq = diagnostics_freq
        #: The diagnostics of the last update, ``None`` when it was not measured (see ``diagnostics_freq``).
        self.last_diagnostics: dict[str, float] | None = None
        self._algorithm_tag = self.algorithm_tag()
        if self.env is not None:
            self._check_action_space()
            self._check_batch_size(self.env)
            if async_rollouts:
                self._check_actors(self.env)

        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _env_and_recipe(env: Any, async_rollouts: bool, n_actors: int) -> tuple[GymEnv | str, EnvRecipe | None]:
        """
        The env to give SB3, and the recipe it was built from, if known: a recipe is built here; an env
        id with ``async_rollouts`` is made with one env per actor (SB3 would make one env, and each
        actor steps at least one); a ``VecEnv`` may carry the recipe that built it.
        """
        if isinstance(env, EnvRecipe):
            return env.build(), env
        if isinstance(env, str) and async_rollouts:
            recipe = VecEnvRecipe(env, n_envs=n_actors)
            return recipe.build(), recipe
        return env, None if env is None else recipe_of(env)

    def _check_actors(self, env: VecEnv) -> None:
        """Refuse an env the actors cannot step, with a message saying what to pass instead."""
        if self.actor_backend == "ray":
            if self.env_recipe is None:
                raise HyperparameterError(
                    f"`actor_backend='ray'` builds each actor's envs where it runs, from a recipe, and a "
                    f"{type(env).__name__} object cannot be rebuilt on another machine: pass env as an env id "
                    "('Hopper-v5'), or as sb3_apo.VecEnvRecipe(env_id, n_envs, env_kwargs=..., wrapper_class=..., "
                    "vec_env_wrapper=...) or VecEnvRecipe(make_env=make_env, n_envs=...) with make_env(rank, seed)."
                )
            if self.n_actors > self.env_recipe.n_envs:
                raise HyperparameterError(
                    f"`n_actors` must be at most the number of envs ({self.env_recipe.n_envs}), since each actor "
                    f"steps at least one; got {self.n_actors}."
                )
        else:
            _async_rollouts().check_shardable(env, self.n_actors)

    def set_env(self, env: GymEnv | EnvRecipe, force_reset: bool = True) -> None:
        """
        SB3's ``set_env``, which also takes a :class:`~sb3_apo.common.env_recipe.EnvRecipe` (built here).

        :param env: the environment, or its recipe
        :param force_reset: reset it before training, as in SB3
        """
        gym_env, recipe = self._env_and_recipe(env, False, self.n_actors)
        assert not isinstance(gym_env, str), "an env id is built only with async_rollouts"
        super().set_env(gym_env, force_reset)
        self.env_recipe = recipe
        if self.async_rollouts and self.env is not None:
            self._check_actors(self.env)

    @classmethod
    def check_hyperparameters(cls, values: Mapping[str, Any]) -> None:
        """
        Raise :class:`~sb3_apo.common.checks.HyperparameterError` naming the first invalid value: the
        checks of :attr:`shared_hyperparameters` and of the class's :attr:`own_hyperparameters`, then those of
        their combinations. The constructor runs them on its arguments, ``load()`` on the archive's values
        and on its keyword arguments.

        :param values: hyperparameters by public name (those of one class, or of any subset of them)
        """
        checks = {**cls.shared_hyperparameters, **cls.own_hyperparameters}
        if cls.needs_clip_range:
            checks["clip_range"] = in_range(0, low_open=True, allow_schedule=True)
        for name, value in values.items():
            if name in checks:
                checks[name](name, value)
        cls._check_combinations(values)

    @classmethod
    def _attributes_from_arguments(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        renamed = arguments.keys() & cls.renamed_keywords.keys()
        for old in renamed:
            renamed_keyword(cls.__name__, old, cls.renamed_keywords[old])
        return {cls.renamed_keywords.get(name, name): value for name, value in arguments.items()}

    @classmethod
    def _renamed_argument(cls, old: str, value: Any, new_value: Any) -> Any:
        """
        The value of a renamed parameter: ``new_value``, or the one given under the former name ``old``
        (with a ``DeprecationWarning``) where it is not ``None``.
        """
        if value is None:
            return new_value
        renamed_keyword(cls.__name__, old, cls.renamed_keywords[old])
        return value

    @classmethod
    def _check_combinations(cls, values: Mapping[str, Any]) -> None:
        """
        Raise :class:`~sb3_apo.common.checks.HyperparameterError` for values that are valid alone but
        not together; a combination is checked where ``values`` holds all of its members.
        """
        if values.get("normalize_advantage") and "batch_size" in values:
            # SB3's PPO asserts it: a minibatch of one sample cannot have its advantages normalised
            check_range("batch_size", values["batch_size"], 2, integer=True)
        if values.get("value_targets") == "vtrace" and values.get("correct_policy_lag") is False:
            raise HyperparameterError(
                "`value_targets='vtrace'` corrects the policy lag; with `correct_policy_lag=False` use value_targets='gae'."
            )
        n_actors = values.get("n_actors", 1)
        if n_actors > 1 and values.get("async_rollouts") is False:
            raise HyperparameterError(f"`n_actors={n_actors}` needs `async_rollouts=True` (actors collect asynchronously).")
        if (
            values.get("async_rollouts")
            and values.get("actor_backend", "fork") == "fork"
            and ("fork" not in mp.get_all_start_methods())
        ):
            raise HyperparameterError("`async_rollouts=True` needs the 'fork' start method of multiprocessing (Linux, macOS).")

    def _check_batch_size(self, env: VecEnv) -> None:
        """
        SB3's ``PPO`` checks: a rollout of one sample cannot have its advantages normalised
        (an error, also an ``AssertionError`` as in ``PPO``); a rollout that is not a multiple
        of ``batch_size`` ends each epoch with a smaller minibatch, and a ``batch_size``
        larger than the rollout trains on the whole rollout at once (warnings, as in ``PPO``).
        """
        rollout_size = self.n_steps * env.num_envs
        if self.normalize_advantage and rollout_size < 2:
            raise HyperparameterError(
                f"`n_steps * n_envs` must be at least 2 with normalize_advantage=True (the advantages of a one-sample "
                f"rollout cannot be normalised), got n_steps={self.n_steps} and n_envs={env.num_envs}; "
                "raise n_steps or pass normalize_advantage=False."
            )
        if self.batch_size > rollout_size:
            warnings.warn(
                f"`batch_size`={self.batch_size} is larger than the rollout (`n_steps * n_envs` = {rollout_size}, "
                f"n_steps={self.n_steps}, n_envs={env.num_envs}): each epoch is one minibatch of {rollout_size} samples.",
                stacklevel=4,  # the line that built the model (through a subclass constructor)
            )
        elif rollout_size % self.batch_size:
            warnings.warn(
                f"`batch_size`={self.batch_size} does not divide the rollout (`n_steps * n_envs` = {rollout_size}, "
                f"n_steps={self.n_steps}, n_envs={env.num_envs}): after every {rollout_size // self.batch_size} "
                f"untruncated mini-batches, there will be a truncated mini-batch of size {rollout_size % self.batch_size}. "
                "We recommend a `batch_size` that is a factor of `n_steps * n_envs`.",
                stacklevel=4,  # the line that built the model (through a subclass constructor)
            )

    def _check_action_space(self) -> None:
        if not isinstance(self.action_space, self.supported_action_spaces):
            accepted = ", ".join(space.__name__ for space in self.supported_action_spaces)
            raise HyperparameterError(  # an AssertionError too, as SB3's check of the action space
                f"{type(self).__name__} does not support the action space {self.action_space!r}; "
                f"the accepted action spaces are {accepted}."
            )

    def _setup_model(self) -> None:
        self._check_action_space()
        self.distribution_math = distribution_math(self.action_space)
        if self.rollout_buffer_class is None:
            self.rollout_buffer_class = anchored_buffer_class(self.observation_space)
        # Generators of their own for anchor actions (in the loss, and in the diagnostics),
        # so that drawing them never shifts torch's global random stream (and thus the rollouts).
        self._anchor_generator = th.Generator(device=self.device)
        self._anchor_generator.seed()
        self._diagnostics_generator = th.Generator(device=self.device)
        self._diagnostics_generator.seed()
        super()._setup_model()  # seeds both generators through set_random_seed()

        if self.clip_range is not None:
            self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        self._schedule_value("clip_range", self.clip_range)
        self._schedule_value("clip_range_vf", self.clip_range_vf)

    def _setup_lr_schedule(self) -> None:
        super()._setup_lr_schedule()
        # Checked here, before the optimizer is built with its first value, and at every update
        self._schedule_value("learning_rate", self.lr_schedule)

    def set_random_seed(self, seed: int | None = None) -> None:
        super().set_random_seed(seed)
        if seed is not None and hasattr(self, "_anchor_generator"):
            # Streams of their own, derived from the seed but not equal to torch's global stream.
            for generator, stream in (
                (self._anchor_generator, ANCHOR_STREAM),
                (self._diagnostics_generator, DIAGNOSTICS_STREAM),
            ):
                generator.manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))

    @property
    def _rollout_actor(self) -> Any:
        """The ``RolloutActor`` of the current ``learn()`` call with ``async_rollouts``, else ``None``."""
        return None if self._async_learner is None else self._async_learner.actor

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "distribution_math",
            "_anchor_generator",
            "_diagnostics_generator",
            "_async_learner",
            "env_recipe",  # rebuilt from the env given to load() or set_env()
        ]

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        assert isinstance(rollout_buffer, DistributionParamsMixin), "the buffer of a PPO-family algorithm keeps pi_old"
        # Without torch's distribution argument checks but in the callbacks: every observation is
        # checked instead (sb3_apo/common/_torch_compat.py)
        with distribution_validation(False) as users_setting:
            callback = self._rollout_callback(callback, users_setting)
            if self.async_rollouts:
                if self._async_learner is None:
                    self._async_learner = _async_rollouts().AsyncLearner(self)
                complete = self._async_learner.collect(env, callback, rollout_buffer)
            else:
                complete = self._collect_rollouts_locally(env, callback, rollout_buffer, n_rollout_steps)
            if complete:
                self._after_rollout(rollout_buffer)
        return complete

    def _rollout_callback(self, callback: BaseCallback, validate_args: bool) -> BaseCallback:
        """
        ``callback`` as a rollout is to be given it: checking every step's observations for inf and
        NaN before the policy acts on them (:meth:`_check_observations`), in place of torch's
        distribution argument validation, which runs twice per step, costs more and sees only what
        reaches a distribution; and calling the callback with ``validate_args`` as that validation's
        setting (the user's).

        :param callback: the rollout's callback
        :param validate_args: the setting of torch's distribution argument validation in the callback's calls
        """
        proxy = _RolloutCallback(callback, self._check_observations, validate_args)
        return proxy  # type: ignore[return-value]  # a proxy forwarding to a BaseCallback, not a subclass

    def _run_sb3_rollout(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        SB3's ``collect_rollouts``, given a :meth:`_rollout_callback`, which checks the observations
        after the first. It runs in torch's inference mode, in which SB3's gradient-free policy calls
        cost less than under ``no_grad`` (``results/speed/micro/loop_costs.txt``); the callbacks run
        outside it, but the tensors among the loop's locals (``obs_tensor``, ``values``, ``log_probs``)
        are inference tensors: a callback clones them before autograd records them.
        """
        assert self._last_obs is not None, "No previous observation was provided"  # as SB3's collect_rollouts()
        self._check_observations(self._last_obs)
        with th.inference_mode():
            return OnPolicyAlgorithm.collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps)

    def _collect_rollouts_locally(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: DistributionParamsMixin, n_rollout_steps: int
    ) -> bool:
        """
        SB3's ``collect_rollouts``, then the parameters of the behaviour policy, which drew the
        stored actions and log-probabilities, on the stored observations (the normalised ones
        under ``VecNormalize``): the policy does not change during a rollout, so one chunked,
        gradient-free pass after it gives the distributions of every step, at less cost than
        copying them out of each step's forward pass (measured in ``results/speed/micro/``).
        """
        complete = self._run_sb3_rollout(env, callback, rollout_buffer, n_rollout_steps)
        if complete:
            rollout_buffer.fill_distribution_params(
                lambda observations: self.distribution_math.params(self.policy.get_distribution(observations))
            )
        return complete

    def _after_rollout(self, rollout_buffer: DistributionParamsMixin) -> None:
        """
        Fill what the buffer keeps besides SB3's arrays and ``pi_old``'s distribution
        parameters, after a complete rollout and before the update; subclasses that
        keep more extend it.

        :param rollout_buffer: the buffer just filled by the rollout
        """

    # ------------------------------------------------------------------ #
    # What a subclass states
    # ------------------------------------------------------------------ #
    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """
        The policy part of the loss on one minibatch.

        :param batch: the minibatch
        :return: the loss to minimise, and its named terms for logging
            (``policy_gradient_loss`` is the surrogate, as in SB3's ``PPO``).
            Every term is checked for inf/NaN before the update.
        """
        raise NotImplementedError

    def _after_policy_update(self, diagnostics: dict[str, float]) -> None:
        """
        Called at the end of every ``train()``, for state that adapts to the update.

        :param diagnostics: what :meth:`measure_update` measured on the whole rollout with the updated
            policy (``kl``: mean exact ``KL(pi_old || pi)``, ``anchor_divergence``, ...)
        """

    # ------------------------------------------------------------------ #
    # The loop
    # ------------------------------------------------------------------ #
    @without_distribution_validation  # the rollout and every loss term are checked instead
    def train(self) -> None:
        """Update the policy on the rollout buffer, as SB3's ``PPO.train()`` does, with ``policy_loss()``."""
        self._check_rollout_is_finite()
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        self._prefer_foreach_adam(self.policy.optimizer)
        clip_range = self._schedule_value("clip_range", self.clip_range)
        clip_range_vf = self._schedule_value("clip_range_vf", self.clip_range_vf)

        logs: dict[str, list[float]] = defaultdict(list)
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = self.distribution_math.distribution_actions(rollout_data.actions)
                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                advantages = rollout_data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                importance_weights = rollout_data.importance_weights  # None when every weight is 1
                if importance_weights is not None:  # decoupled PPO: w weights the policy gradient
                    advantages = importance_weights * advantages
                log_ratio = log_prob - rollout_data.old_log_prob
                ratio = th.exp(log_ratio)
                batch = Minibatch(
                    advantages=advantages,
                    log_ratio=log_ratio,
                    ratio=ratio,
                    old_log_prob=rollout_data.old_log_prob,
                    actions=rollout_data.actions,
                    old_params=rollout_data.old_distribution_params,
                    # evaluate_actions() leaves the distribution it built in policy.action_dist
                    distribution=self.policy.action_dist,
                    clip_range=clip_range,
                    math=self.distribution_math,
                    generator=self._anchor_generator,
                    samples=rollout_data,
                    importance_weights=importance_weights,
                )
                policy_loss, policy_terms = self.policy_loss(batch)

                if clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                # Approximate the entropy when it has no analytical form
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                terms = {**policy_terms, "value_loss": value_loss, "entropy_loss": entropy_loss}
                term_values = {name: term.item() for name, term in terms.items()}
                self._raise_if_not_finite(term_values, epoch)

                with th.no_grad():
                    for name, value in term_values.items():
                        logs[name].append(value)
                    if clip_range is not None:
                        logs["clip_fraction"].append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
                    # Schulman's k3 estimator of KL(pi_old || pi), as in SB3's PPO
                    approx_kl_div = th.mean((ratio - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                # Checked as a Python float, which costs less than th.isfinite. Finite terms with a
                # non-finite sum (a coefficient or an overflow) also end here, before the step.
                if not math.isfinite(grad_norm.item()):
                    what = "gradient"
                    if not math.isfinite(loss.item()):
                        what = "total loss (every term is finite, so a coefficient is not)"
                    raise NonFiniteLossError(self._non_finite_message(what, epoch))
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        self.last_diagnostics = None
        iteration = self.num_timesteps // (self.n_steps * self.n_envs)
        if self._diagnostics_needed() or iteration % self.diagnostics_freq == 0:
            self.last_diagnostics = diagnostics = self.measure_update()
            self._after_policy_update(diagnostics)

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        for name, values_of_term in logs.items():
            self.logger.record(f"train/{name}", np.mean(values_of_term))
        for name, value in (self.last_diagnostics or {}).items():
            self.logger.record(f"train/{name}", value)
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if clip_range is not None:
            self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _prefer_foreach_adam(self, optimizer: th.optim.Optimizer) -> None:
        """
        Step SB3's default optimizer, Adam, with torch's ``foreach`` implementation on CPU, where
        torch's default is its for-loop one (``foreach=None`` chooses ``foreach`` on CUDA only):
        the same updates bit for bit (the equality with SB3's ``PPO`` is tested), in less time per step
        (measured in ``results/speed/micro/loop_costs.txt``). A ``foreach``
        or ``fused`` value that the user gave in ``optimizer_kwargs`` is kept. It runs at every
        update, because ``load()`` restores the optimizer's options with its state.
        """
        if type(optimizer) is not th.optim.Adam or self.device.type != "cpu":
            return
        for group in optimizer.param_groups:
            if group.get("foreach") is None and not group.get("fused") and not group.get("differentiable"):
                group["foreach"] = True

    def _diagnostics_needed(self) -> bool:
        """Whether the algorithm's state needs the diagnostics after every update, whatever ``diagnostics_freq`` says."""
        return False

    def measure_update(self) -> dict[str, float]:
        """
        How far the update moved the policy from ``pi_old``, measured on the whole
        rollout without gradient (:func:`sb3_apo.common.diagnostics.measure_update`).

        :return: ``kl`` (mean exact ``KL(pi_old || pi)``), ``anchor_divergence`` (mean exact
            ``1/2 chi2`` over the unsampled actions), ``ratio_max``, ``ratio_dev``,
            ``anchor_ratio_max`` and ``anchor_ratio_dev``
        """
        buffer = self.rollout_buffer  # flattened by get() during the update
        return update_diagnostics.measure_update(
            self.policy,
            self.distribution_math,
            buffer.observations,
            buffer.actions,
            buffer.distribution_params,
            buffer.log_probs,
            self.diagnostic_anchor_actions,
            self._diagnostics_generator,
        )

    def _non_finite_message(self, term: str, epoch: int) -> str:
        # _check_rollout_is_finite() has passed: the data are finite, so the optimisation itself blew up.
        return (
            f"{type(self).__name__}: the {term} became non-finite (inf or NaN) at update {self._n_updates + 1} "
            f"(epoch {epoch + 1} of {self.n_epochs}, after {self.num_timesteps} timesteps); the update was not "
            "applied. The rollout's data are finite, so the update diverged: lower the learning rate or the loss "
            "coefficients."
        )

    def _check_rollout_is_finite(self) -> None:
        """
        Raise :class:`NonFiniteLossError` naming the cause when the rollout's rewards, values, returns
        or advantages hold inf or NaN: one pass over the buffer's arrays per update, before any minibatch.
        """
        buffer = self.rollout_buffer
        arrays = {name: getattr(buffer, name) for name in ("rewards", "values", "returns", "advantages")}
        bad = [name for name, array in arrays.items() if not np.isfinite(array).all()]
        if not bad:
            return
        if "rewards" in bad:
            steps = np.argwhere(~np.isfinite(buffer.rewards))
            cause = (
                f"the environment returned non-finite rewards (first at rollout step {steps[0][0]} of env {steps[0][1]}, "
                f"{len(steps)} in all). Fix the environment's reward, or find the step with SB3's VecCheckNan wrapper "
                "(stable_baselines3.common.vec_env.VecCheckNan(env, raise_exception=True))."
            )
        elif "values" in bad:
            cause = "the value network's outputs are non-finite, so training diverged: lower the learning rate."
        else:
            cause = (
                f"the rewards are finite but the {' and '.join(bad)} overflowed: the rewards are too large for float32 "
                "sums; scale them, or normalise them with VecNormalize(env, norm_reward=True)."
            )
        raise NonFiniteLossError(
            f"{type(self).__name__}: the rollout's {', '.join(bad)} are non-finite (inf or NaN) at update "
            f"{self._n_updates + 1} (after {self.num_timesteps} timesteps); the update was not applied: {cause}"
        )

    def _check_observations(
        self, observations: np.ndarray | dict[str, np.ndarray], terminal_of_env: int | None = None
    ) -> None:
        """
        Raise :class:`NonFiniteObservationError` if the environment returned inf or NaN in an
        observation, which the policy cannot act on; integer observations (images) cannot hold them.

        :param observations: one step's observations of every env, an array or a dict of arrays
            (the env first); or, with ``terminal_of_env``, one env's terminal observation
        :param terminal_of_env: the env whose terminal observation ``observations`` is
        """
        arrays = observations.items() if isinstance(observations, dict) else [("", observations)]
        for key, array in arrays:
            array = np.asarray(array)
            if not np.issubdtype(array.dtype, np.inexact) or np.isfinite(array).all():
                continue
            if terminal_of_env is None:
                where = f"env {int(np.argwhere(~np.isfinite(array))[0][0])}"
            else:
                where = f"the terminal observation of env {terminal_of_env}, which bootstraps its truncated episode"
            where += f", key {key!r}" if key else ""
            raise NonFiniteObservationError(
                f"{type(self).__name__}: the environment returned non-finite observations (inf or NaN) after "
                f"{self.num_timesteps} timesteps ({where}), which the policy cannot act on. Find the step with SB3's "
                "VecCheckNan wrapper (stable_baselines3.common.vec_env.VecCheckNan(env, raise_exception=True)), "
                "and fix the environment (under VecNormalize, check its raw observations)."
            )

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        # SB3 lets the remaining progress go below 0 on the last update when total_timesteps is not a
        # multiple of the rollout size, so that a linear schedule returns a negative learning rate or
        # clip range there; a schedule is held at its end value instead.
        self._current_progress_remaining = max(0.0, 1.0 - float(num_timesteps) / float(total_timesteps))

    def _schedule_value(self, name: str, schedule: Schedule | float | None) -> float | None:
        """The value of a scheduled hyperparameter now, checked (see :func:`~sb3_apo.common.checks.check_schedule_value`)."""
        return None if schedule is None else check_schedule_value(name, schedule, self._current_progress_remaining)

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        self._schedule_value("learning_rate", self.lr_schedule)
        super()._update_learning_rate(optimizers)

    def _raise_if_not_finite(self, term_values: dict[str, float], epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` naming the first loss term whose value (logged anyway) is inf or NaN."""
        culprit = next((name for name, value in term_values.items() if not math.isfinite(value)), None)
        if culprit is not None:
            raise NonFiniteLossError(self._non_finite_message(f"loss term `{culprit}`", epoch))

    def learn(
        self: SelfPPOFamilyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOFamilyAlgorithm:
        """
        Train the model, as SB3's ``OnPolicyAlgorithm.learn``.

        :param tb_log_name: the name of the run for TensorBoard logging (default: the class name)
        """
        try:
            return super().learn(
                total_timesteps=total_timesteps,
                callback=callback,
                log_interval=log_interval,
                tb_log_name=tb_log_name or type(self).__name__,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )
        finally:
            if self._async_learner is not None:  # also on errors and Ctrl-C: no process outlives learn()
                self._async_learner.close()
