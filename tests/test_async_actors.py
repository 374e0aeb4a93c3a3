"""
Several rollout actors (``n_actors > 1``), each stepping a shard of the envs: the rollouts
joined in env order, a random stream per actor, the ``VecNormalize`` statistics of every
observation, the moments' arithmetic, faults and refusals.
"""

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from sb3_apo import APO, SPO
from sb3_apo.async_rollouts import RolloutActorError
from sb3_apo.async_rollouts.shards import add_moments, env_indices, moments_added

SMALL = {"n_steps": 16, "batch_size": 32, "n_epochs": 1}


class Clock(gym.Env):
    """
    An env whose observations and rewards ignore the actions: ``[identity, t]`` and ``t``, with
    episodes of ``length`` steps, so that any two runs of the same steps see the same values.
    """

    action_space = gym.spaces.Box(-1.0, 1.0, (1,))
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,))

    def __init__(self, identity: float = 0.0, length: int = 7):
        self.identity, self.length, self.t = identity, length, 0

    def _obs(self):
        return np.array([self.identity, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.t >= self.length, False, {"identity": self.identity}


class DictClock(Clock):
    """:class:`Clock` with a ``Dict`` observation space."""

    observation_space = gym.spaces.Dict(
        {"identity": gym.spaces.Box(-np.inf, np.inf, (1,)), "t": gym.spaces.Box(-np.inf, np.inf, (1,))}
    )

    def _obs(self):
        identity, t = super()._obs()
        return {"identity": np.array([identity], dtype=np.float32), "t": np.array([t], dtype=np.float32)}


def clocks(n_envs: int, identities: bool = True, **kwargs) -> DummyVecEnv:
    return DummyVecEnv([lambda i=i: Clock(float(i) if identities else 0.0, **kwargs) for i in range(n_envs)])


def test_the_envs_are_split_into_contiguous_shards():
    assert env_indices(8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert env_indices(5, 2) == [[0, 1, 2], [3, 4]]
    assert env_indices(3, 3) == [[0], [1], [2]]


@pytest.mark.parametrize("dict_space", [False, True])
def test_the_moments_added_are_those_of_the_new_data(dict_space):
    generator = np.random.default_rng(0)
    old, new = generator.normal(3.0, 2.0, (50, 4)), generator.normal(-1.0, 0.5, (30, 4))

    def statistics(*batches):
        obs_rms = RunningMeanStd(shape=(4,))
        for batch in batches:
            obs_rms.update(batch)
        return ({"x": obs_rms} if dict_space else obs_rms), RunningMeanStd(shape=())

    before, after = statistics(old), statistics(old, new)
    added = moments_added(after, before)
    added_obs = added[0]["x"] if dict_space else added[0]
    assert added_obs.count == pytest.approx(30)
    np.testing.assert_allclose(added_obs.mean, new.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(added_obs.var, new.var(axis=0), rtol=1e-9)
    assert added[1].count == 0  # nothing was added to the returns' statistics
    add_moments(before, added)
    for result, expected in ((before[0], after[0]),) if not dict_space else ((before[0]["x"], after[0]["x"]),):
        assert result.count == pytest.approx(expected.count)
        np.testing.assert_allclose(result.mean, expected.mean, rtol=1e-9)
        np.testing.assert_allclose(result.var, expected.var, rtol=1e-9)
    np.testing.assert_array_equal(before[1].mean, after[1].mean)


class ChecksTheJoinedRollout(BaseCallback):
    """Checks, at every step and rollout, that env ``j`` of the joined rollout is env ``j``."""

    def __init__(self, n_envs: int):
        super().__init__()
        self.identities = np.arange(n_envs, dtype=np.float32)
        self.rollouts = 0

    def _on_step(self):
        np.testing.assert_array_equal(self.locals["new_obs"][:, 0], self.identities)
        assert [info["identity"] for info in self.locals["infos"]] == list(self.identities)
        assert self.locals["rewards"].shape == self.locals["dones"].shape == (len(self.identities),)
        return True

    def _on_rollout_end(self):
        buffer = self.model.rollout_buffer
        np.testing.assert_array_equal(buffer.observations[:, :, 0], np.broadcast_to(self.identities, (buffer.buffer_size, 5)))
        # the clock runs in every env alike: t of step k is the step's count within its episode
        assert np.all(buffer.observations[1:, :, 1] == (buffer.observations[:-1, :, 1] + 1) % 7)
        assert not np.all(buffer.values == 0) and np.all(np.isfinite(buffer.advantages))
        self.rollouts += 1


def test_the_rollouts_of_the_shards_are_joined_in_env_order():
    model = APO("MlpPolicy", clocks(5), seed=0, async_rollouts=True, n_actors=2, **{**SMALL, "batch_size": 40})
    checks = ChecksTheJoinedRollout(5)
    model.learn(4 * 5 * SMALL["n_steps"], callback=checks)
    assert checks.rollouts == 4 and model.num_timesteps == 4 * 5 * SMALL["n_steps"]
    assert model._last_obs.shape == (5, 2)
    assert len(model.ep_info_buffer) == 0  # no Monitor: nothing to record


class KeepsTheLastRollout(BaseCallback):
    """Keeps a copy of the last joined rollout's actions and observations."""

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        self.actions = self.model.rollout_buffer.actions.copy()
        self.observations = self.model.rollout_buffer.observations.copy()


def test_each_actor_draws_its_own_actions():
    # Every env sees the same observations: actors sharing the learner's random state would draw
    # the same actions in env 0 and env 2 (the first env of each shard).
    keeps = KeepsTheLastRollout()
    model = APO("MlpPolicy", clocks(4, identities=False), seed=0, async_rollouts=True, n_actors=2, **SMALL)
    model.learn(4 * SMALL["n_steps"], callback=keeps)
    assert not np.allclose(keeps.actions[:, 0], keeps.actions[:, 2])

    # A seeded run repeats itself
    again = KeepsTheLastRollout()
    APO("MlpPolicy", clocks(4, identities=False), seed=0, async_rollouts=True, n_actors=2, **SMALL).learn(
        4 * SMALL["n_steps"], callback=again
    )
    np.testing.assert_array_equal(again.actions, keeps.actions)


@pytest.mark.parametrize("n_actors", [2, 3])
def test_the_learners_statistics_count_every_observation_of_every_actor(n_actors):
    # The clocks' observations and rewards ignore the actions, so synchronous training over the same
    # steps normalises the same values: its statistics are what the merged ones must be.
    def statistics(**kwargs):
        env = VecNormalize(clocks(6), gamma=0.9)
        APO("MlpPolicy", env, seed=0, gamma=0.9, **SMALL, **kwargs).learn(5 * 6 * SMALL["n_steps"])
        return env

    synchronous = statistics()
    merged = statistics(async_rollouts=True, n_actors=n_actors)
    assert merged.obs_rms.count > 5 * 6 * SMALL["n_steps"]
    for name in ("obs_rms", "ret_rms"):
        expected, result = getattr(synchronous, name), getattr(merged, name)
        assert result.count == pytest.approx(expected.count)
        np.testing.assert_allclose(result.mean, expected.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result.var, expected.var, rtol=1e-9, atol=1e-12)


def test_each_actor_normalises_with_the_statistics_of_every_shard():
    # Shard 0 steps the envs of identities 0-2, shard 1 those of 3-5: with the statistics of its own
    # observations only, shard 0 would centre the identity on 1 and shard 1 on 4. With everyone's
    # (less the other shard's report in flight), both centre it near 2.5: identity 2 normalises
    # below 0, identity 3 above.
    keeps = KeepsTheLastRollout()
    model = APO("MlpPolicy", VecNormalize(clocks(6)), seed=0, async_rollouts=True, n_actors=2, **SMALL)
    model.learn(8 * 6 * SMALL["n_steps"], callback=keeps)
    identity = keeps.observations[..., 0]
    assert np.all(identity[:, 2] < 0) and np.all(identity[:, 3] > 0)
    assert np.all(np.diff(identity, axis=1) > 0)  # and one scale: the identities stay in order


def test_dict_observations_are_joined_and_their_statistics_merged_key_by_key():
    def trained(**kwargs):
        env = VecNormalize(DummyVecEnv([lambda i=i: DictClock(float(i)) for i in range(4)]))
        model = APO("MultiInputPolicy", env, seed=0, **SMALL, **kwargs)
        model.learn(3 * 4 * SMALL["n_steps"])
        return model, env

    model, env = trained(async_rollouts=True, n_actors=2)
    _, synchronous = trained()
    assert set(model._last_obs) == {"identity", "t"} and model._last_obs["identity"].shape == (4, 1)
    assert np.all(np.diff(model._last_obs["identity"][:, 0]) > 0)  # normalised, in env order
    for key in ("identity", "t"):
        assert env.obs_rms[key].count == pytest.approx(synchronous.obs_rms[key].count)
        np.testing.assert_allclose(env.obs_rms[key].mean, synchronous.obs_rms[key].mean, rtol=1e-9)
        np.testing.assert_allclose(env.obs_rms[key].var, synchronous.obs_rms[key].var, rtol=1e-9)


def test_every_algorithm_and_sb3s_callbacks_run_with_several_actors(tmp_path):
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=4, seed=0))
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False, norm_reward=False)
    model = SPO("MlpPolicy", env, seed=0, async_rollouts=True, n_actors=2, **SMALL)
    evaluations = EvalCallback(eval_env, eval_freq=2 * SMALL["n_steps"], n_eval_episodes=1)
    model.learn(6 * 4 * SMALL["n_steps"], callback=evaluations, progress_bar=True)
    np.testing.assert_array_equal(eval_env.obs_rms.mean, env.obs_rms.mean)
    assert len(model.ep_info_buffer) == 0  # Pendulum's episodes are 200 steps long
    model.save(tmp_path / "model")
    loaded = SPO.load(tmp_path / "model", env=env)
    assert loaded.n_actors == 2
    loaded.learn(13 * 4 * SMALL["n_steps"], reset_num_timesteps=False)  # from a reset: 208 steps per env
    assert loaded.num_timesteps == 19 * 4 * SMALL["n_steps"]
    assert len(loaded.ep_info_buffer) == 4  # each env's first episode (of 200 steps), through Monitor


@pytest.mark.slow
def test_a_killed_actor_of_several_stops_training_with_its_name():
    class KillsTheSecondActor(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_end(self):
            self.pids = self.model._rollout_actor.pids
            if self.n_calls == 2 * SMALL["n_steps"]:
                os.kill(self.pids[1], signal.SIGKILL)

    model = APO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=0), async_rollouts=True, n_actors=2, **SMALL)
    kills = KillsTheSecondActor()
    with pytest.raises(RolloutActorError) as error:
        model.learn(10_000, callback=kills)
    assert f"rollout actor 1 (pid {kills.pids[1]}) was killed by signal SIGKILL" in str(error.value)
    assert model._rollout_actor is None
    for pid in kills.pids:  # the other actor is closed too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    model.learn(2 * 4 * SMALL["n_steps"])  # new actors take over
    assert model.num_timesteps == 2 * 4 * SMALL["n_steps"]


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        (lambda: clocks(4), {"n_actors": 0}, "`n_actors` must be"),
        (lambda: clocks(4), {"n_actors": 2}, r"`n_actors=2` needs `async_rollouts=True`"),
        (lambda: clocks(2), {"n_actors": 3, "async_rollouts": True}, r"`n_actors` must be at most the number of envs \(2\)"),
        (
            lambda: make_vec_env("Pendulum-v1", n_envs=2, vec_env_cls=SubprocVecEnv),
            {"n_actors": 2, "async_rollouts": True},
            "splits a DummyVecEnv .* got SubprocVecEnv",
        ),
    ],
)
def test_bad_actor_settings_are_refused(env, kwargs, message):
    venv = env()
    try:
        with pytest.raises(ValueError, match=message):
            APO("MlpPolicy", venv, **kwargs)
    finally:
        venv.close()
