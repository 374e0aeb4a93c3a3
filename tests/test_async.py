"""
Asynchronous rollouts (docs/async.md) and the behaviour distribution recorded from
the rollout's policy: the maths with hand-computed values, the zero-lag
reduction to the synchronous update, and what SB3 users rely on (callbacks,
VecNormalize, SubprocVecEnv, save/load/continue), for every algorithm.
"""

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

from sb3_apo import APO, SPO, PPOPenalty, SupportAPO
from sb3_apo.async_rollouts import ForkedRolloutActor, StepRecord, StepRecords, policy_weights, vtrace
from sb3_apo.common.buffers import AnchoredRolloutBuffer, DistributionParamsMixin

SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 2}


def collect_one_rollout(model, callback=None):
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


def test_the_proximal_policy_replaces_the_behaviour_policy_with_truncated_weights():
    buffer = AnchoredRolloutBuffer(2, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Box(-1, 1, (1,)), n_envs=1)
    buffer.reset()
    buffer.log_probs[:, 0] = [math.log(0.2), math.log(0.5)]  # pi_b(a|s)
    prox_log_probs = th.tensor([math.log(0.1), math.log(1.0)])  # pi_prox(a|s)
    prox_params = th.tensor([[0.5, 1.0], [-0.5, 2.0]])

    truncated = buffer.store_proximal_policy(lambda obs, actions: (prox_params, prox_log_probs), 1.5)

    # w = min(pi_prox / pi_b, c): min(0.1 / 0.2, 1.5) = 0.5 and min(1.0 / 0.5, 1.5) = 1.5
    np.testing.assert_allclose(buffer.importance_weights[:, 0], [0.5, 1.5], rtol=1e-6)
    assert truncated == 0.5
    np.testing.assert_allclose(buffer.log_probs[:, 0], prox_log_probs.numpy())
    np.testing.assert_array_equal(buffer.distribution_params[:, 0], prox_params.numpy())


def test_samples_carry_the_importance_weights_only_where_one_differs_from_1():
    def one_minibatch(weights):
        buffer = AnchoredRolloutBuffer(2, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Box(-1, 1, (1,)), n_envs=1)
        buffer.reset()
        buffer.distribution_params[:, 0] = [[0.5, 1.0], [-0.5, 2.0]]
        buffer.importance_weights[:, 0] = weights
        buffer.full = True
        samples = next(buffer.get(2))  # shuffled: put them back in storage order by their loc
        order = th.argsort(samples.old_distribution_params[:, 0], descending=True)
        weights = None if samples.importance_weights is None else samples.importance_weights[order]
        return samples.old_distribution_params[order], weights

    params, weights = one_minibatch([1.0, 1.0])
    assert weights is None  # every weight is 1: the update is unweighted, with no tensor to multiply
    assert th.equal(params, th.tensor([[0.5, 1.0], [-0.5, 2.0]]))
    params, weights = one_minibatch([0.5, 1.0])
    assert th.equal(weights, th.tensor([0.5, 1.0]))
    assert th.equal(params, th.tensor([[0.5, 1.0], [-0.5, 2.0]]))


def trained_after_one_update(async_rollouts, importance_weights=None, **kwargs):
    model = APO(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        anchor_coef=0.0,
        seed=0,
        async_rollouts=async_rollouts,
        **kwargs,
    )
    model.set_logger(configure(None, []))
    buffer = collect_one_rollout(model)
    if importance_weights is not None:
        buffer.importance_weights[...] = importance_weights
    model.train()
    return model


def test_with_no_lag_the_decoupled_update_is_the_synchronous_one():
    # No lag: pi_b = pi_prox, so every weight is 1 and the update is bit-for-bit the synchronous one
    # (max_policy_lag=0: the actor runs SB3's loop, whose per-step values the batched ones of a lagging
    # actor equal only to float32 rounding; test_an_actor_that_defers_the_critic_... checks those).
    synchronous = trained_after_one_update(False, **SMALL)
    decoupled = trained_after_one_update(True, np.ones((32, 2), dtype=np.float32), max_policy_lag=0, **SMALL)
    for name, tensor in synchronous.policy.state_dict().items():
        assert th.equal(tensor, decoupled.policy.state_dict()[name]), name


def test_the_weights_multiply_the_policy_gradient_term():
    weights = np.linspace(0.1, 1.0, 64, dtype=np.float32).reshape(32, 2)
    settings = {"n_steps": 32, "batch_size": 64, "n_epochs": 1, "normalize_advantage": False}
    model = trained_after_one_update(True, weights, **settings)
    # One minibatch, taken before any step: pi = pi_prox, r = 1, so the clipped surrogate is -mean(w * A).
    advantages = model.rollout_buffer.advantages.flatten()
    expected = -np.mean(model.rollout_buffer.importance_weights.flatten() * advantages)
    assert model.logger.name_to_value["train/policy_gradient_loss"] == pytest.approx(expected, rel=1e-5)
    unweighted = trained_after_one_update(True, np.ones_like(weights), **settings)
    assert unweighted.logger.name_to_value["train/policy_gradient_loss"] == pytest.approx(-np.mean(advantages), rel=1e-5)


def test_vtrace_with_hand_computed_values():
    gamma, gae_lambda = 0.5, 1.0
    rewards, values = np.array([[1.0], [2.0]]), np.array([[0.5], [1.0]])
    last_values, dones, ratios = np.array([2.0]), np.array([False]), np.array([[2.0], [0.5]])
    advantages, returns = vtrace(rewards, values, np.array([[1.0], [0.0]]), last_values, dones, ratios, gamma, gae_lambda)
    # t = 1: delta = 2 + 0.5 * 2 - 1 = 2, advantage 2, vs = min(1, 0.5) * 2 = 1, target 1 + 1 = 2
    # t = 0: delta = 1 + 0.5 * 1 - 0.5 = 1, advantage 1 + 0.5 * 1 = 1.5, vs = min(1, 2) * 1.5, target 0.5 + 1.5 = 2
    np.testing.assert_allclose(advantages, [[1.5], [2.0]])
    np.testing.assert_allclose(returns, [[2.0], [2.0]])
    # An episode starts at t = 1: nothing flows back to t = 0 (delta = 1 - 0.5, target 0.5 + 0.5)
    advantages, returns = vtrace(rewards, values, np.array([[1.0], [1.0]]), last_values, dones, ratios, gamma, gae_lambda)
    np.testing.assert_allclose(advantages[0], [0.5])
    np.testing.assert_allclose(returns[0], [1.0])


def test_vtrace_without_lag_is_gae():
    rng = np.random.default_rng(0)
    buffer = AnchoredRolloutBuffer(16, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Box(-1, 1, (1,)), n_envs=3, gae_lambda=0.9)
    buffer.reset()
    buffer.rewards[...] = rng.normal(size=(16, 3))
    buffer.values[...] = rng.normal(size=(16, 3))
    buffer.episode_starts[...] = rng.random((16, 3)) < 0.2
    last_values, dones = rng.normal(size=3).astype(np.float32), np.array([True, False, False])
    buffer.compute_returns_and_advantage(th.as_tensor(last_values), dones)
    advantages, returns = vtrace(
        buffer.rewards, buffer.values, buffer.episode_starts, last_values, dones, np.ones((16, 3)), 0.99, 0.9
    )
    np.testing.assert_allclose(advantages, buffer.advantages, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(returns, buffer.returns, rtol=1e-6, atol=1e-6)


class RecordsLogs(BaseCallback):
    """Keeps every value the rollouts log under ``async/``, and counts the callback calls."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, list[float]] = {}
        self.rollout_ends = 0

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        self.rollout_ends += 1
        for key, value in self.model.logger.name_to_value.items():
            if key.startswith("async/"):
                self.values.setdefault(key, []).append(value)


def test_with_the_lag_forced_to_zero_async_training_is_synchronous_training():
    def train(async_rollouts):
        model = APO("MlpPolicy", "Pendulum-v1", seed=0, async_rollouts=async_rollouts, max_policy_lag=0, **SMALL)
        recorder = RecordsLogs()
        model.learn(4 * SMALL["n_steps"], callback=recorder)
        return model, recorder

    synchronous, _ = train(False)
    decoupled, recorder = train(True)
    assert recorder.values["async/policy_lag"] == [0, 0, 0, 0]
    assert recorder.values["async/is_weight_mean"] == [1.0] * 4
    assert recorder.values["async/is_truncated_fraction"] == [0.0] * 4
    # The actor draws from the random state the learner had: the same rollouts, the same updates.
    for name, tensor in synchronous.policy.state_dict().items():
        assert th.equal(tensor, decoupled.policy.state_dict()[name]), name


@pytest.mark.parametrize(("env_id", "kwargs"), [("Pendulum-v1", {}), ("CartPole-v1", {}), ("Pendulum-v1", {"use_sde": True})])
def test_an_actor_that_defers_the_critic_collects_the_rollout_of_sb3s_loop(env_id, kwargs):
    # With lag the actor's steps compute the actions only, then one pass over the rollout gives the
    # values, log-probabilities and pi_b's parameters: the same rollout as SB3's per-step loop (which
    # the actor runs without lag), to float32 rounding, with the same actions and rewards.
    def first_rollout(max_policy_lag):
        model = APO(
            "MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), seed=0, max_policy_lag=max_policy_lag, **SMALL, **kwargs
        )
        model._setup_learn(SMALL["n_steps"])  # the first observation and the episode buffers, as learn() sets them
        actor = ForkedRolloutActor(model)
        actor.start()
        try:
            actor.send_weights(0, policy_weights(model.policy))
            return actor.receive_rollout()
        finally:
            actor.close()

    per_step, deferred = first_rollout(0), first_rollout(1)
    for name in ("observations", "actions", "rewards", "episode_starts"):
        assert np.array_equal(per_step.arrays[name], deferred.arrays[name]), name
    for name in ("values", "log_probs", "distribution_params", "returns", "advantages"):
        np.testing.assert_allclose(deferred.arrays[name], per_step.arrays[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert not np.all(deferred.arrays["values"] == 0)  # filled, not the steps' placeholders
    np.testing.assert_allclose(deferred.last_values, per_step.last_values, rtol=1e-6)


@pytest.mark.parametrize(
    ("cls", "env_id", "kwargs"),
    [
        (APO, "Pendulum-v1", {}),
        (PPOPenalty, "Pendulum-v1", {}),
        (SPO, "Pendulum-v1", {}),
        (SupportAPO, "CartPole-v1", {}),
        (APO, "CartPole-v1", {"max_policy_lag": 2, "importance_weight_max": 2.0}),
        (APO, "Pendulum-v1", {"value_targets": "vtrace", "use_sde": True}),
    ],
)
def test_every_algorithm_trains_with_bounded_lag(cls, env_id, kwargs):
    model = cls("MlpPolicy", env_id, seed=0, async_rollouts=True, **SMALL, **kwargs)
    recorder = RecordsLogs()
    model.learn(5 * SMALL["n_steps"], callback=recorder)
    lag = kwargs.get("max_policy_lag", 1)
    assert model.num_timesteps == 5 * SMALL["n_steps"]
    assert recorder.rollout_ends == 5
    assert recorder.n_calls == 5 * SMALL["n_steps"]
    assert recorder.values["async/policy_lag"] == [min(k, lag) for k in range(5)]
    weight_max = kwargs.get("importance_weight_max", 1.0)
    assert all(0 < w <= weight_max for w in recorder.values["async/is_weight_mean"])
    assert all(0 <= f <= 1 for f in recorder.values["async/is_truncated_fraction"])
    assert recorder.values["async/is_weight_mean"][1] != 1.0  # the lag is corrected
    if env_id == "CartPole-v1":  # episodes that end within 5 rollouts reach ep_info_buffer
        assert len(model.ep_info_buffer) > 0
    assert model._rollout_actor is None  # closed when learn() returns


@pytest.mark.parametrize(
    "make_env",
    [
        lambda: IdentityEnvBox(eps=0.5),
        lambda: IdentityEnv(5),
        lambda: IdentityEnvMultiDiscrete(3),
        lambda: IdentityEnvMultiBinary(3),
    ],
    ids=["Box", "Discrete", "MultiDiscrete", "MultiBinary"],
)
def test_every_action_space_trains_with_a_lag(make_env):
    # With lag the actor evaluates its stored actions (kept in the action space's dtype, int8 for
    # MultiBinary) after the rollout, and the learner again for the lag correction.
    model = APO("MlpPolicy", make_vec_env(make_env, n_envs=2), async_rollouts=True, max_policy_lag=1, seed=0, **SMALL)
    recorder = RecordsLogs()
    model.learn(4 * 2 * SMALL["n_steps"], callback=recorder)
    assert recorder.values["async/policy_lag"] == [0, 1, 1, 1]
    assert np.isfinite(model.rollout_buffer.log_probs).all() and np.isfinite(model.rollout_buffer.values).all()


def test_without_lag_correction_the_lagged_rollout_is_trained_on_as_it_was_collected(monkeypatch):
    # Cogment-verse's asynchronous PPO: pi_old is the behaviour policy, and no weights.
    def must_not_run(*args, **kwargs):
        raise AssertionError("the proximal policy was computed")

    monkeypatch.setattr(DistributionParamsMixin, "store_proximal_policy", must_not_run)
    model = APO("MlpPolicy", "Pendulum-v1", seed=0, async_rollouts=True, correct_policy_lag=False, **SMALL)
    recorder = RecordsLogs()
    model.learn(4 * SMALL["n_steps"], callback=recorder)
    assert recorder.values["async/policy_lag"] == [0, 1, 1, 1]
    assert recorder.values["async/is_weight_mean"] == [1.0] * 4
    assert recorder.values["async/is_truncated_fraction"] == [0.0] * 4


def test_callbacks_vecnormalize_save_load_and_continue(tmp_path):
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False, norm_reward=False)
    model = APO("MlpPolicy", env, seed=0, async_rollouts=True, **SMALL)
    callbacks = [
        EvalCallback(eval_env, eval_freq=32, n_eval_episodes=1, log_path=str(tmp_path / "eval")),
        CheckpointCallback(save_freq=64, save_path=str(tmp_path / "checkpoints"), save_vecnormalize=True),
    ]
    model.learn(256, callback=callbacks, progress_bar=True)
    # The learner's VecNormalize has the actor's statistics: every observation the actor normalised
    # (the learner's own reset included), while the learner stepped nothing itself.
    assert env.obs_rms.count >= 1e-4 + 256 + 2
    np.testing.assert_array_equal(eval_env.obs_rms.mean, env.obs_rms.mean)  # synced by EvalCallback
    assert len(np.load(tmp_path / "eval" / "evaluations.npz")["timesteps"]) == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "rl_model_128_steps.zip",
        "rl_model_256_steps.zip",
        "rl_model_vecnormalize_128_steps.pkl",
        "rl_model_vecnormalize_256_steps.pkl",
    ]
    model.save(tmp_path / "model")
    env.save(str(tmp_path / "vecnormalize.pkl"))
    loaded_env = VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), make_vec_env("Pendulum-v1", n_envs=2, seed=2))
    np.testing.assert_array_equal(loaded_env.obs_rms.mean, env.obs_rms.mean)
    loaded = APO.load(tmp_path / "model", env=loaded_env)
    assert loaded.async_rollouts and loaded.max_policy_lag == 1 and loaded._rollout_actor is None
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 256 + 64
    model.learn(64, reset_num_timesteps=False)  # continue: a new actor, on the env the first one left
    assert model.num_timesteps == 256 + 64


def test_tensorboard_receives_the_async_values(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    model = APO("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), async_rollouts=True, seed=0, **SMALL)
    model.learn(3 * SMALL["n_steps"])
    events = event_accumulator.EventAccumulator(str(tmp_path / "APO_1"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"async/policy_lag", "async/is_weight_mean", "async/learner_idle_s", "async/actor_idle_s"} <= tags
    assert [event.value for event in events.Scalars("async/policy_lag")] == [0.0, 1.0, 1.0]


@pytest.mark.slow
def test_subproc_vec_env_inside_the_actor():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    try:
        model = APO("MlpPolicy", env, seed=0, async_rollouts=True, **SMALL)
        model.learn(4 * 64)
        model.learn(2 * 64, reset_num_timesteps=False)
        assert model.num_timesteps == 6 * 64
        assert len(model.ep_info_buffer) > 0
    finally:
        env.close()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("async_rollouts", "yes", "`async_rollouts` must be True or False"),
        ("max_policy_lag", -1, "max_policy_lag"),
        ("max_policy_lag", 1.5, "max_policy_lag"),
        ("importance_weight_max", 0.0, "importance_weight_max"),
        ("value_targets", "retrace", "`value_targets` must be one of 'gae', 'vtrace'"),
        ("correct_policy_lag", "no", "`correct_policy_lag` must be True or False"),
    ],
)
def test_bad_async_settings_are_refused(name, value, message):
    with pytest.raises(ValueError, match=message):
        APO("MlpPolicy", "Pendulum-v1", **{name: value})


def test_vtrace_needs_the_lag_correction():
    with pytest.raises(ValueError, match="correct_policy_lag=False"):
        APO("MlpPolicy", "Pendulum-v1", async_rollouts=True, value_targets="vtrace", correct_policy_lag=False)


@pytest.mark.parametrize("correct_policy_lag", [True, False])
def test_value_clipping_is_relative_to_the_learners_values(correct_policy_lag):
    # On a lagged, corrected rollout the buffer's values, the reference of value clipping, are the
    # learner's; the GAE targets stay the actor's (returns - advantages = the actor's values).
    class ChecksTheValues(BaseCallback):
        def __init__(self):
            super().__init__()
            self.checked = 0

        def _on_step(self):
            return True

        def _on_rollout_end(self):
            buffer = self.model.rollout_buffer
            with th.no_grad():
                learner = self.model.policy.predict_values(th.as_tensor(buffer.observations.reshape(-1, 3))).numpy()
            learner = learner.reshape(buffer.values.shape)
            actor = buffer.returns - buffer.advantages
            lagged = self.model.logger.name_to_value["async/policy_lag"] > 0
            if lagged and correct_policy_lag:
                np.testing.assert_allclose(buffer.values, learner, rtol=1e-5, atol=1e-6)
                assert not np.allclose(actor, learner, rtol=1e-3, atol=1e-4)
            else:
                np.testing.assert_allclose(buffer.values, actor, rtol=1e-5, atol=1e-5)
            self.checked += lagged

    checks = ChecksTheValues()
    model = APO(
        "MlpPolicy",
        "Pendulum-v1",
        seed=0,
        async_rollouts=True,
        correct_policy_lag=correct_policy_lag,
        clip_range_vf=0.2,
        **SMALL,
    )
    model.learn(4 * SMALL["n_steps"], callback=checks)
    assert checks.checked == 3


def test_step_records_cross_a_pipe_with_their_infos_unchanged():
    # The numpy scalars of the infos travel as arrays: back with the same types, values, bits and key order
    infos = [
        [{"x": np.float64(0.1), "c": np.float32(-2.5), "n": 3, "episode": {"r": 1.5}, "TimeLimit.truncated": False}],
        [{"x": np.float64(np.nan), "flag": np.bool_(True), "terminal_observation": np.ones(2, dtype=np.float32)}],
        [{}],
    ]
    steps = [StepRecord(np.full((1, 2), t, dtype=np.float32), np.ones(1), np.zeros(1, dtype=bool), infos[t]) for t in range(3)]
    records = StepRecords.stack(steps)
    copied = pickle.loads(pickle.dumps(records))
    assert len(copied) == 3 and copied.new_obs.shape == (3, 1, 2)
    for t in range(3):
        assert copied[t].infos.__repr__() == infos[t].__repr__()  # same keys, order, values and types
        for key, value in infos[t][0].items():
            assert type(copied[t].infos[0][key]) is type(value), key
        np.testing.assert_array_equal(copied[t].new_obs, steps[t].new_obs)
    assert records.infos[0][0]["x"] == np.float64(0.1)  # the originals are left as they were
