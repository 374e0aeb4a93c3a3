"""Every action space and policy SB3 supports, vectorised envs, save/load and determinism."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from sb3_apo import APO, SPO, PPOPenalty
from sb3_apo.common.distributions import BernoulliMath, CategoricalMath

ALGORITHMS = [APO, PPOPenalty, SPO]
ACTION_SPACE_ENVS = {
    "Discrete": lambda: IdentityEnv(5),
    "Box": lambda: IdentityEnvBox(eps=0.5),
    "MultiDiscrete": lambda: IdentityEnvMultiDiscrete(3),
    "MultiBinary": lambda: IdentityEnvMultiBinary(3),
}
TINY = dict(n_steps=32, batch_size=16, n_epochs=2)

TRAIN_KEYS = [
    "train/kl",
    "train/ratio_max",
    "train/anchor_ratio_max",
    "train/anchor_ratio_dev",
    "train/approx_kl",
    "train/entropy_loss",
    "train/policy_gradient_loss",
    "train/value_loss",
    "train/explained_variance",
]


def train_logs(model):
    return {key: value for key, value in model.logger.name_to_value.items() if key.startswith("train/")}


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("space", list(ACTION_SPACE_ENVS))
def test_every_action_space_trains_and_logs_the_diagnostics(algo, space):
    model = algo("MlpPolicy", DummyVecEnv([ACTION_SPACE_ENVS[space]] * 2), seed=0, **TINY)
    model.learn(128)
    logs = train_logs(model)
    for key in TRAIN_KEYS:
        assert key in logs, key
        assert np.isfinite(logs[key]), key
    assert logs["train/kl"] > 0
    assert logs["train/ratio_max"] >= 1 and logs["train/anchor_ratio_max"] >= 1
    for parameter in model.policy.parameters():
        assert th.isfinite(parameter).all()


@pytest.mark.parametrize("anchor_mode", ["chi2", "parity"])
@pytest.mark.parametrize("space", list(ACTION_SPACE_ENVS))
def test_apo_anchor_modes_on_every_action_space(anchor_mode, space):
    model = APO("MlpPolicy", ACTION_SPACE_ENVS[space](), anchor_mode=anchor_mode, n_anchor_actions=3, seed=0, **TINY)
    model.learn(64)
    assert np.isfinite(train_logs(model)["train/anchor_loss"])


def log_prob_from_params(math, params, actions):
    if isinstance(math, CategoricalMath):
        return math.log_probs(params).gather(1, math.action_index(actions)).sum(1)
    if isinstance(math, BernoulliMath):
        return math.log_prob_of(actions, params).sum(1)
    return math.normal(params).log_prob(actions).sum(1)


class PredictsElsewhere(BaseCallback):
    """A callback that runs the policy on other observations at every step of the rollout."""

    def _on_step(self):
        self.model.predict(np.stack([self.model.observation_space.sample() for _ in range(2)]))
        return True


#: Every action space, and the Box policies whose distribution depends on more than the observation
STORED_PARAMETERS_CASES = {
    **{space: (lambda make=make: make_vec_env(make, 2, seed=0), {}) for space, make in ACTION_SPACE_ENVS.items()},
    "Box, gSDE": (lambda: make_vec_env("Pendulum-v1", 2, seed=0), {"use_sde": True, "sde_sample_freq": 4}),
    "Box, VecNormalize": (lambda: VecNormalize(make_vec_env("Pendulum-v1", 2, seed=0)), {}),
}


@pytest.mark.parametrize("case", list(STORED_PARAMETERS_CASES))
def test_stored_distribution_parameters_reproduce_the_rollout_log_probs(case):
    # log pi_old(a|s) from the stored parameters equals the log-prob stored during the rollout, even
    # with a callback that runs the policy on other states meanwhile. The two are computed from the
    # same weights and states by GEMMs of different row counts (one step's envs, a minibatch), whose
    # float32 rounding differs by a few ulp per layer, depending on the CPU: 1e-5 on log-probs of
    # magnitude 1 to 10 leaves a margin of about 100 over that, while parameters overwritten by
    # another state's or policy's are off by 0.1 or more.
    make_env, kwargs = STORED_PARAMETERS_CASES[case]
    model = APO("MlpPolicy", make_env(), seed=1, n_steps=64, batch_size=32, **kwargs)
    model.learn(256, callback=PredictsElsewhere())
    for data in model.rollout_buffer.get_in_order(64):
        log_prob = log_prob_from_params(model.distribution_math, data.old_distribution_params, data.actions)
        assert th.allclose(log_prob, data.old_log_prob, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_multi_input_policy_on_dict_observations(algo):
    model = algo("MultiInputPolicy", SimpleMultiObsEnv(random_start=False), seed=0, **TINY)
    model.learn(64)
    assert np.isfinite(train_logs(model)["train/kl"])


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_cnn_policy_on_images(algo):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    model = algo(
        "CnnPolicy",
        env,
        seed=0,
        n_steps=16,
        batch_size=8,
        n_epochs=1,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16)),
    )
    model.learn(32)
    assert np.isfinite(train_logs(model)["train/kl"])


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_gsde_vec_normalize_and_subprocesses(algo):
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, vec_env_cls=SubprocVecEnv, seed=0))
    try:
        model = algo("MlpPolicy", env, use_sde=True, sde_sample_freq=4, seed=0, **TINY)
        model.learn(128)
        assert np.isfinite(train_logs(model)["train/kl"])
    finally:
        env.close()


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_save_load_and_continue(algo, tmp_path):
    env = make_vec_env("CartPole-v1", 2, seed=0)
    model = algo("MlpPolicy", env, seed=0, **TINY).learn(128)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=env)
    for name, value in model.policy.state_dict().items():
        assert th.equal(value, loaded.policy.state_dict()[name])
    observations = env.reset()
    assert np.array_equal(
        model.predict(observations, deterministic=True)[0], loaded.predict(observations, deterministic=True)[0]
    )
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == model.num_timesteps + 64


def test_save_load_keeps_the_hyperparameters(tmp_path):
    model = APO("MlpPolicy", "Pendulum-v1", anchor_coef=3.0, n_anchor_actions=5, anchor_mode="parity", **TINY)
    model.save(tmp_path / "apo")
    loaded = APO.load(tmp_path / "apo")
    assert (loaded.anchor_coef, loaded.n_anchor_actions, loaded.anchor_mode) == (3.0, 5, "parity")


def test_ppo_penalty_beta_survives_save_load_and_repeated_learn(tmp_path):
    env = make_vec_env("CartPole-v1", 2, seed=0)
    model = PPOPenalty("MlpPolicy", env, kl_coef=1.0, kl_target=0.01, seed=0, **TINY)
    model.learn(64)
    beta_after_first = model.kl_coef
    assert beta_after_first != 1.0  # adapted (a fresh policy moves far less or more than the target)
    model.learn(64, reset_num_timesteps=False)
    beta = model.kl_coef
    model.save(tmp_path / "penalty")
    loaded = PPOPenalty.load(tmp_path / "penalty", env=env)
    assert loaded.kl_coef == beta
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.logger.name_to_value["train/kl_coef"] == beta  # the restored beta was used


def test_fixed_beta_stays_fixed():
    model = PPOPenalty("MlpPolicy", "CartPole-v1", kl_coef=0.3, adaptive_kl=False, seed=0, **TINY).learn(96)
    assert model.kl_coef == 0.3


def test_set_env(tmp_path):
    model = APO("MlpPolicy", make_vec_env("CartPole-v1", 2), seed=0, **TINY).learn(64)
    model.save(tmp_path / "apo")
    loaded = APO.load(tmp_path / "apo")
    new_env = make_vec_env("CartPole-v1", 2)
    loaded.set_env(new_env)
    loaded.learn(64)
    assert loaded.get_env() is new_env
    assert loaded.num_timesteps == 64
    assert np.isfinite(loaded.logger.name_to_value["train/kl"])


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_determinism_under_a_seed(algo, env_id):
    def run():
        model = algo("MlpPolicy", env_id, seed=3, **TINY)
        model.learn(96)
        return model.policy.state_dict(), train_logs(model)

    (first, first_logs), (second, second_logs) = run(), run()
    for name in first:
        assert th.equal(first[name], second[name]), name
    assert first_logs["train/anchor_ratio_max"] == second_logs["train/anchor_ratio_max"]


def test_tensorboard_and_progress_bar(tmp_path):
    pytest.importorskip("tensorboard")
    APO("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), **TINY).learn(64, progress_bar=True)
    assert (tmp_path / "APO_1").is_dir()


@pytest.mark.parametrize(("algo", "kwargs", "expected"), [(APO, {}, [2, 4]), (PPOPenalty, {}, [1, 2, 3, 4, 5])])
def test_diagnostics_every_n_updates(algo, kwargs, expected):
    class Record(BaseCallback):
        def _on_rollout_start(self) -> None:
            if self.model.last_diagnostics is not None:
                measured.append(self.num_timesteps // 32)
                assert self.model.logger.name_to_value["train/kl"] == self.model.last_diagnostics["kl"]

        def _on_step(self) -> bool:
            return True

    measured: list[int] = []
    model = algo("MlpPolicy", "CartPole-v1", diagnostics_freq=2, seed=0, **TINY, **kwargs)
    model.learn(6 * 32, callback=Record())
    # APO measures after every 2nd update; PPOPenalty's adaptive beta needs the KL of every update
    assert measured == expected
    with pytest.raises(ValueError, match="diagnostics_freq"):
        algo("MlpPolicy", "CartPole-v1", diagnostics_freq=0)
