"""APO: Anchored Policy Optimization (PPO-clip plus a trust region on the unsampled actions)."""

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_apo.apo.parity import parity_anchors
from sb3_apo.common.adaptive import adapt_penalty_coef
from sb3_apo.common.checks import Check, HyperparameterError, check_bool, check_range, in_range, one_of
from sb3_apo.common.env_recipe import EnvRecipe
from sb3_apo.common.on_policy import Minibatch, PPOFamilyAlgorithm, clipped_surrogate

#: ``anchor_coef="auto"`` keeps the adapted coefficient within these bounds (our choice): below
#: 1e-3 the anchor term no longer acts. Above, a larger coefficient shrinks the update less and less
#: (HalfCheetah-v5, 50 epochs: a median anchor divergence per update of 0.015 at 1, 0.00098 at 32,
#: 0.00065 at 1e3), and a run that reached 1e3 diverged (results/paper_scale/README.md).
ANCHOR_COEF_BOUNDS = (1e-3, 1e3)
ANCHOR_MODES = ("chi2", "parity")
ANCHOR_ESTIMATORS = ("sample", "exact")


def parse_anchor_coef(anchor_coef: float | str) -> tuple[float, bool]:
    """
    Read ``anchor_coef`` as SB3's SAC reads ``ent_coef``: a number, ``"auto"`` (adapted, starting
    at 1.0) or ``"auto_<initial value>"`` (adapted, starting at that value, e.g. ``"auto_0.1"``).

    :param anchor_coef: the value given by the user
    :return: the initial coefficient, and whether it adapts
    :raises HyperparameterError: (a ``ValueError``) for any other value
    """
    if isinstance(anchor_coef, str):
        accepted = "a number in [0, inf), 'auto' or 'auto_<initial value>' (e.g. 'auto_0.1')"
        if anchor_coef == "auto":
            return 1.0, True
        prefix, _, initial = anchor_coef.partition("_")
        try:
            value = float(initial) if "_" not in initial else float("nan")  # float() reads "0.1_2" as 0.12
        except ValueError:
            value = float("nan")
        if prefix != "auto" or not 0 < value < float("inf"):
            raise HyperparameterError(f"`anchor_coef` must be {accepted}, with a positive initial value; got {anchor_coef!r}.")
        return value, True
    check_range("anchor_coef", anchor_coef, 0)
    return float(anchor_coef), False


class APO(PPOFamilyAlgorithm):
    """
    Anchored Policy Optimization: PPO-clip whose trust region also covers the
    actions it did not sample.

    Paper: "APO: Anchored Policy Optimization by Leveraging Unsampled Actions in
    Continuous Spaces". PPO only constrains the ratio of the executed action; APO
    adds a chi-square penalty that pulls the ratios of unsampled actions back to 1::

        L = L_clip + anchor_coef * mean_s 1/2 * E_{a' ~ pi_old(.|s), a' != a}[(r(a'|s) - 1)^2]

    The expectation is exact for ``Discrete``, ``MultiDiscrete`` (summed over
    sub-spaces) and ``MultiBinary`` (the flipped bit). For ``Box`` it is a Monte Carlo
    mean over ``n_anchor_actions`` draws from ``pi_old`` (``anchor_estimator="sample"``)
    or the closed form between the two Gaussians (``"exact"``); see ``docs/algorithms.md``.

    With ``anchor_coef="auto"`` the coefficient (``model.anchor_coef``) adapts after every
    update by the PPO paper's beta rule, so that the anchor divergence measured on the whole
    rollout (``train/anchor_divergence``) stays near ``anchor_target`` whatever ``n_epochs``
    is; it is training state, logged as ``train/anchor_coef`` and kept by ``save()``/``load()``
    and repeated ``learn()`` calls. It stays within ``[1e-3, 1e3]``; a ``RuntimeWarning`` says, once
    per model, when it first reaches the upper bound, where a larger coefficient would barely shrink
    the update.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, or a schedule of the remaining progress (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size (as in SB3's ``PPO``, one that does not divide ``n_steps * n_envs``,
        or exceeds it, gives a warning)
    :param n_epochs: Number of epochs when optimizing the loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter ``eps`` of PPO-clip, or a schedule of the remaining progress
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
    :param importance_weight_max: With ``async_rollouts``, ``c``, the truncation of the importance weights
        ``min(pi_prox(a|s) / pi_b(a|s), c)`` of the policy-gradient term
    :param value_targets: With ``async_rollouts``, the value targets and advantages of a lagged rollout:
        ``"gae"``, GAE from the values recorded by the actor; ``"vtrace"``, V-trace from the learner's values
    :param correct_policy_lag: With ``async_rollouts``, whether a lagged rollout is corrected (decoupled PPO:
        the learner's policy is ``pi_old`` and the policy gradient is weighted by ``w``). ``False``: the
        rollout is trained on as if it were on-policy, with the behaviour policy as ``pi_old`` and no
        weights, as Cogment-verse's asynchronous PPO does; for comparisons, not recommended
    :param actor_backend: With ``async_rollouts``, where the actors run: ``"fork"``, processes forked from
        this one, which step its ``VecEnv``; ``"ray"``, Ray actors anywhere on the cluster that
        ``ray.init()`` reaches (``RAY_ADDRESS``; without it, a local instance started and stopped here),
        which build their envs from a recipe: pass ``env`` as an env id or a
        :class:`~sb3_apo.common.env_recipe.VecEnvRecipe` (see ``docs/async.md``)
    :param ray_actor_options: With ``actor_backend="ray"``, the options of each Ray actor
        (``ray.remote``'s: e.g. ``{"num_cpus": 1, "resources": {"simulator": 1}}``)
    :param anchor_coef: Coefficient of the anchor penalty (0 gives exactly SB3's PPO), or ``"auto"``
        (adapted, starting at 1.0), or ``"auto_<initial value>"``
    :param anchor_target: With ``anchor_coef="auto"``: the anchor divergence per update the coefficient
        holds (halved below ``anchor_target / 1.5``, doubled above ``anchor_target * 1.5``)
    :param anchor_estimator: For ``Box`` actions: ``"sample"`` (default), the Monte Carlo mean over
        ``n_anchor_actions`` draws; ``"exact"``, the closed form, which draws nothing. Discrete spaces
        are exact under both.
    :param n_anchor_actions: K, anchor actions drawn per state in the anchor penalty for Box actions (and in
        ``anchor_mode="parity"`` for discrete ones); the diagnostics draw ``diagnostic_anchor_actions``
    :param anchor_mode: ``"chi2"`` (default): the penalty above. ``"parity"``: the public
        APO code's loss, for reproducing its curves: for Box, the *executed* action's
        ``1/2 * pi_old(a|s) * (r(a|s) - 1)^2`` weighted by the old joint density; for
        discrete spaces, K unsampled actions drawn uniformly, each weighted by ``pi_old(a'|s) / K``
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    ANCHOR_MODES: ClassVar[tuple[str, ...]] = ANCHOR_MODES
    ANCHOR_ESTIMATORS: ClassVar[tuple[str, ...]] = ANCHOR_ESTIMATORS
    #: As attributes: ``anchor_coef`` is the current coefficient, ``adaptive_anchor_coef`` whether it adapts.
    own_hyperparameters: ClassVar[dict[str, Check]] = {
        "anchor_coef": in_range(0),
        "adaptive_anchor_coef": check_bool,
        "anchor_target": in_range(0, low_open=True),
        "anchor_estimator": one_of(*ANCHOR_ESTIMATORS),
        "n_anchor_actions": in_range(1, integer=True),
        "anchor_mode": one_of(*ANCHOR_MODES),
    }
    anchor_coef: float
    adaptive_anchor_coef: bool
    anchor_target: float
    anchor_estimator: str
    n_anchor_actions: int
    anchor_mode: str

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
        clip_range: float | Schedule = 0.2,
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
        anchor_coef: float | str = 1.0,
        anchor_target: float = 0.003,
        anchor_estimator: str = "sample",
        n_anchor_actions: int = 2,
        anchor_mode: str = "chi2",
        _init_setup_model: bool = True,
    ):
        own = self._attributes_from_arguments(
            dict(
                anchor_coef=anchor_coef,
                anchor_target=anchor_target,
                anchor_estimator=anchor_estimator,
                n_anchor_actions=n_anchor_actions,
                anchor_mode=anchor_mode,
            )
        )
        self.check_hyperparameters(own)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            diagnostic_anchor_actions=diagnostic_anchor_actions,
            diagnostics_freq=diagnostics_freq,
            async_rollouts=async_rollouts,
            max_policy_lag=max_policy_lag,
            n_actors=n_actors,
            importance_weight_max=importance_weight_max,
            value_targets=value_targets,
            correct_policy_lag=correct_policy_lag,
            actor_backend=actor_backend,
            ray_actor_options=ray_actor_options,
            _init_setup_model=False,
        )
        # The coefficient lives here, not in _setup_model(), which load() calls after restoring it.
        for name, value in own.items():
            setattr(self, name, value)
        self.warned_at_anchor_coef_bound = False  # the bound warning is given once per model
        if _init_setup_model:
            self._setup_model()

    @classmethod
    def _attributes_from_arguments(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        if "anchor_coef" not in arguments:
            return super()._attributes_from_arguments(arguments)
        coef, adaptive = parse_anchor_coef(arguments["anchor_coef"])
        adaptive = arguments.get("adaptive_anchor_coef", adaptive)
        return super()._attributes_from_arguments({**arguments, "anchor_coef": coef, "adaptive_anchor_coef": adaptive})

    @classmethod
    def _check_combinations(cls, values: Mapping[str, Any]) -> None:
        super()._check_combinations(values)
        if values.get("anchor_mode") == "parity" and values.get("anchor_estimator", "sample") != "sample":
            raise HyperparameterError(
                "`anchor_estimator` applies to anchor_mode='chi2'; the parity loss has no exact form: "
                f"use anchor_estimator='sample' with anchor_mode='parity', got {values['anchor_estimator']!r}."
            )

    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        assert batch.clip_range is not None  # needs_clip_range: the constructor and load() require one
        surrogate = clipped_surrogate(batch.ratio, batch.advantages, batch.clip_range)
        if self.anchor_mode == "parity":
            anchor_loss = parity_anchors(batch.math, batch, self.n_anchor_actions).chi2_penalty()
        elif self.anchor_estimator == "exact":
            anchor_loss = batch.math.exact_anchor_divergence(batch.old_params, batch.new_params, batch.actions).mean()
        else:
            anchor_loss = batch.anchor_penalty(self.n_anchor_actions)
        return surrogate + self.anchor_coef * anchor_loss, {
            "policy_gradient_loss": surrogate,
            "anchor_loss": anchor_loss,
        }

    def _diagnostics_needed(self) -> bool:
        return self.adaptive_anchor_coef  # the coefficient adapts to the anchor divergence of every update

    def _after_policy_update(self, diagnostics: dict[str, float]) -> None:
        self.logger.record("train/anchor_coef", self.anchor_coef)  # the coefficient this update used
        if self.adaptive_anchor_coef:
            previous = self.anchor_coef
            self.anchor_coef = adapt_penalty_coef(
                self.anchor_coef, diagnostics["anchor_divergence"], self.anchor_target, bounds=ANCHOR_COEF_BOUNDS
            )
            if self.anchor_coef == ANCHOR_COEF_BOUNDS[1] > previous and not self.warned_at_anchor_coef_bound:
                self.warned_at_anchor_coef_bound = True
                warnings.warn(
                    f"APO: anchor_coef='auto' reached its upper bound {ANCHOR_COEF_BOUNDS[1]:g} after "
                    f"{self.num_timesteps} timesteps: the anchor divergence per update "
                    f"({diagnostics['anchor_divergence']:.3g}) stays above anchor_target={self.anchor_target:g}. "
                    "A larger coefficient barely shrinks the update any more, and runs held there have diverged: "
                    "lower learning_rate or n_epochs.",
                    RuntimeWarning,
                    stacklevel=2,
                )
