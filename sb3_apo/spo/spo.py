"""SPO: Simple Policy Optimization (Xie et al.)."""

from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_apo.common.env_recipe import EnvRecipe
from sb3_apo.common.on_policy import Minibatch, PPOFamilyAlgorithm


class SPO(PPOFamilyAlgorithm):
    """
    Simple Policy Optimization: a quadratic penalty replaces PPO's clipping::

        L = -mean(r * A - |A| / (2 * eps) * (r - 1)^2)

    Its optimum in ``r`` is exactly ``1 + sign(A) * eps``, and unlike clipping its
    gradient is never zeroed, so the ratio is pulled back once it overshoots.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, or a schedule of the remaining progress (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size (as in SB3's ``PPO``, one that does not divide ``n_steps * n_envs``,
        or exceeds it, gives a warning)
    :param n_epochs: Number of epochs when optimizing the loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: ``eps``, the ratio's distance from 1 at the optimum, or a schedule
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
        :param n_anchor_actions: Deprecated: ``diagnostic_anchor_actions``, which it sets
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    renamed_keywords: ClassVar[dict[str, str]] = {"n_anchor_actions": "diagnostic_anchor_actions"}

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
        n_anchor_actions: int | None = None,
        _init_setup_model: bool = True,
    ):
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
            diagnostic_anchor_actions=self._renamed_argument("n_anchor_actions", n_anchor_actions, diagnostic_anchor_actions),
            diagnostics_freq=diagnostics_freq,
            async_rollouts=async_rollouts,
            max_policy_lag=max_policy_lag,
            n_actors=n_actors,
            importance_weight_max=importance_weight_max,
            value_targets=value_targets,
            correct_policy_lag=correct_policy_lag,
            actor_backend=actor_backend,
            ray_actor_options=ray_actor_options,
            _init_setup_model=_init_setup_model,
        )

    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        ratio, advantages, eps = batch.ratio, batch.advantages, batch.clip_range
        assert eps is not None  # needs_clip_range: the constructor and load() require one
        if eps == 0:
            # A schedule that reached 0 (e.g. the last update of "lin_0.2"): the optimum is r = 1,
            # so the policy does not move; |A| / (2 * 0) would turn the loss into NaN.
            surrogate = 0.0 * ratio.sum()
        else:
            surrogate = -(ratio * advantages - advantages.abs() / (2 * eps) * (ratio - 1) ** 2).mean()
        return surrogate, {"policy_gradient_loss": surrogate}
