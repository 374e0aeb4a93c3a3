"""
The learner's side of asynchronous rollouts: :class:`AsyncLearner`, which the algorithm
owns as SB3's loop owns its rollout buffer, and which its ``collect_rollouts()`` asks for
each rollout. It sees its actors through :class:`~sb3_apo.async_rollouts.rollout.RolloutActor`
only. ``docs/async.md`` gives the design and the maths.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_apo.async_rollouts.actor import ActorGroup, ForkedRolloutActor, as_trained_actions
from sb3_apo.async_rollouts.rollout import BUFFER_ARRAYS, Rollout, RolloutActor
from sb3_apo.async_rollouts.vtrace import vtrace

if TYPE_CHECKING:
    from sb3_apo.common.on_policy import PPOFamilyAlgorithm


def policy_weights(policy: th.nn.Module) -> dict[str, np.ndarray]:
    """A policy's ``state_dict`` as numpy arrays."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in policy.state_dict().items()}


def fill_buffer(rollout_buffer: RolloutBuffer, rollout: Rollout) -> None:
    """Copy a received rollout's arrays into the learner's buffer, which is then full."""
    rollout_buffer.reset()
    for name in BUFFER_ARRAYS:
        target, source = getattr(rollout_buffer, name), rollout.arrays[name]
        if isinstance(target, dict):
            for key in target:
                target[key][...] = source[key]
        else:
            target[...] = source
    rollout_buffer.pos, rollout_buffer.full = rollout_buffer.buffer_size, True


class AsyncLearner:
    """
    Asynchronous rollouts for one algorithm: starts its actor at the first rollout of a
    ``learn()`` call, keeps ``max_policy_lag + 1`` rollouts requested, and turns each one
    received into what SB3's ``collect_rollouts`` would have left (the filled buffer, the
    callbacks' calls, ``num_timesteps``), corrected for the policy lag.

    :param model: the algorithm that owns it
    """

    def __init__(self, model: PPOFamilyAlgorithm):
        self.model = model
        #: The actor of the current ``learn()`` call, ``None`` between calls.
        self.actor: RolloutActor | None = None
        #: Updates since the actor started.
        self.policy_version = 0
        #: An earlier actor moved the env on: the next one resets it.
        self.env_stale = False

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer) -> bool:
        """
        The asynchronous ``collect_rollouts``: hand the actor the current weights (for a later
        rollout), receive the rollout it collected meanwhile into ``rollout_buffer``, and replay
        its steps to the callbacks as SB3's loop would have.

        :return: ``False`` if a callback stopped training
        """
        rollout, learner_idle_s = self._exchange()
        self._adopt_statistics(rollout)
        callback.on_rollout_start()
        if not self._replay(rollout, env, callback):
            return False
        fill_buffer(rollout_buffer, rollout)
        self.model._last_obs, self.model._last_episode_starts = rollout.last_obs, rollout.last_episode_starts
        policy_lag, truncated_fraction = self._correct_lag(rollout_buffer, rollout)
        logger = self.model.logger
        logger.record("async/policy_lag", policy_lag)
        # mypy: importance_weights is a field of the anchored buffer (DistributionParamsMixin)
        logger.record("async/is_weight_mean", float(rollout_buffer.importance_weights.mean()))  # type: ignore[attr-defined]
        logger.record("async/is_truncated_fraction", truncated_fraction)
        logger.record("async/learner_idle_s", learner_idle_s)
        logger.record("async/actor_idle_s", rollout.actor_idle_s)
        logger.record("async/actor_collect_s", rollout.collect_s)
        logger.record("async/actor_restarts", getattr(self.actor, "restarts", 0))
        callback.update_locals({"new_obs": rollout.last_obs, "dones": rollout.last_episode_starts})
        callback.on_rollout_end()
        return True

    def _start_actor(self) -> RolloutActor:
        model = self.model
        if model.actor_backend == "ray":
            from sb3_apo.async_rollouts.ray_actors import RayActorGroup  # Ray is imported only where it is used

            actor: RolloutActor = RayActorGroup(model, model.n_actors, reset_env=self.env_stale)
        elif model.n_actors > 1:
            actor = ActorGroup.forked(model, model.n_actors, reset_env=self.env_stale)
        else:
            actor = ForkedRolloutActor(model, reset_env=self.env_stale)
        self.env_stale = True
        actor.start()
        self.actor, self.policy_version = actor, 0
        for _ in range(model.max_policy_lag):
            actor.send_weights(self.policy_version, policy_weights(model.policy))
        return actor

    def _exchange(self) -> tuple[Rollout, float]:
        """Send the current weights, and receive the oldest rollout requested; also the seconds waited for it."""
        if self.actor is None:
            actor = self._start_actor()
        else:
            actor = self.actor
            self.policy_version += 1  # one train() per collect_rollouts() since the last call
        actor.send_weights(self.policy_version, policy_weights(self.model.policy))
        waited = time.perf_counter()
        rollout = actor.receive_rollout()
        return rollout, time.perf_counter() - waited

    def _adopt_statistics(self, rollout: Rollout) -> None:
        """The actor's ``VecNormalize`` statistics, which normalised the rollout: what the callbacks sync and save."""
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None and rollout.vec_normalize_stats is not None:
            # SB3 declares obs_rms by its Dict-observation branch; a Box env's is one RunningMeanStd
            vec_normalize.obs_rms, vec_normalize.ret_rms = rollout.vec_normalize_stats  # type: ignore[assignment]

    def _replay(self, rollout: Rollout, env: VecEnv, callback: BaseCallback) -> bool:
        """Replay the rollout's steps to the callbacks, as SB3's loop calls them; ``False`` if one stopped training."""
        model = self.model
        for n_steps in range(len(rollout.steps)):
            step = rollout.steps[n_steps]
            model.num_timesteps += env.num_envs
            callback.update_locals({"n_steps": n_steps, "env": env, **vars(step)})
            if not callback.on_step():
                return False
            model._update_info_buffer(step.infos, step.dones)
        return True

    def _correct_lag(self, rollout_buffer: RolloutBuffer, rollout: Rollout) -> tuple[int, float]:
        """
        Make the learner's policy ``pi_prox`` the old policy of a lagged rollout (decoupled PPO), and
        its values the reference of value clipping and of V-trace's targets.

        :return: the policy lag, and the fraction of importance weights truncated
        """
        model = self.model
        policy_lag = self.policy_version - rollout.policy_version
        assert 0 <= policy_lag <= model.max_policy_lag
        if policy_lag == 0 or not model.correct_policy_lag:
            return policy_lag, 0.0  # with no lag pi_prox is pi_b, and w = 1 exactly
        behaviour_log_probs = rollout_buffer.log_probs.copy()
        # mypy: store_proximal_policy is a method of the anchored buffer (DistributionParamsMixin)
        truncated_fraction = rollout_buffer.store_proximal_policy(  # type: ignore[attr-defined]
            self._evaluate_proximal, model.importance_weight_max
        )
        # The learner's values become the reference of value clipping, as pi_prox is the policy's:
        # against the actor's, one update old, a value that moved by clip_range_vf in the last
        # update could not move on in this one (docs/async.md, "Value targets").
        # mypy: _fill_from_observations is a method of the anchored buffer (DistributionParamsMixin)
        rollout_buffer._fill_from_observations(rollout_buffer.values[..., None], model.policy.predict_values)  # type: ignore[attr-defined]
        if model.value_targets == "vtrace":
            self._store_vtrace_targets(rollout_buffer, np.exp(rollout_buffer.log_probs - behaviour_log_probs), rollout)
        return policy_lag, truncated_fraction

    def _store_vtrace_targets(self, rollout_buffer: RolloutBuffer, ratios: np.ndarray, rollout: Rollout) -> None:
        """Replace the actor's returns and advantages by V-trace's, from the learner's values (already in the buffer)."""
        model = self.model
        with th.no_grad():
            last_values = model.policy.predict_values(obs_as_tensor(rollout.last_obs, model.device))
        rollout_buffer.advantages, rollout_buffer.returns = vtrace(
            rollout_buffer.rewards,
            rollout_buffer.values,
            rollout_buffer.episode_starts,
            last_values.cpu().numpy().flatten(),
            rollout.last_episode_starts,
            ratios,
            model.gamma,
            model.gae_lambda,
        )

    def _evaluate_proximal(self, observations: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``pi_prox``'s distribution parameters, and log-probabilities of the stored actions."""
        model = self.model
        distribution = model.policy.get_distribution(observations)
        return model.distribution_math.params(distribution), distribution.log_prob(as_trained_actions(model, actions))

    def close(self) -> None:
        """Close the actor of this ``learn()`` call, if any; the next call starts a new one."""
        if self.actor is not None:
            actor, self.actor = self.actor, None
            actor.close()
