"""With their extra terms switched off, the algorithms make exactly SB3's PPO updates."""

import pytest
import torch as th
from stable_baselines3 import PPO

from sb3_apo import APO, PPOPenalty

SETTINGS = dict(n_steps=64, batch_size=32, n_epochs=3, seed=7)
ENVS = ["CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0"]


def trained_parameters(cls, env_id, **kwargs):
    # Construct and train one model at a time: construction re-seeds the global generators.
    model = cls("MlpPolicy", env_id, **SETTINGS, **kwargs)
    model.learn(4 * SETTINGS["n_steps"])
    return model.policy.state_dict()


def assert_same_parameters(expected, actual):
    assert expected.keys() == actual.keys()
    for name in expected:
        assert th.equal(expected[name], actual[name]), name


@pytest.mark.parametrize("env_id", ENVS)
def test_apo_without_anchor_is_ppo(env_id):
    reference = trained_parameters(PPO, env_id)
    assert_same_parameters(reference, trained_parameters(APO, env_id, anchor_coef=0.0))


@pytest.mark.parametrize("env_id", ENVS[:2])
def test_ppo_penalty_with_clipping_and_zero_beta_is_ppo(env_id):
    reference = trained_parameters(PPO, env_id)
    actual = trained_parameters(PPOPenalty, env_id, clip_range=0.2, kl_coef=0.0, adaptive_kl=False)
    assert_same_parameters(reference, actual)


def test_equivalence_holds_with_gsde_and_value_clipping():
    kwargs = dict(use_sde=True, sde_sample_freq=4, clip_range_vf=0.2, target_kl=0.05)
    reference = trained_parameters(PPO, "Pendulum-v1", **kwargs)
    assert_same_parameters(reference, trained_parameters(APO, "Pendulum-v1", anchor_coef=0.0, **kwargs))


@pytest.mark.parametrize("env_id", ENVS[:2])
def test_the_anchor_changes_the_updates(env_id):
    # the converse: the equality above is not vacuous
    reference = trained_parameters(PPO, env_id)
    actual = trained_parameters(APO, env_id, anchor_coef=1.0)
    assert any(not th.equal(reference[name], actual[name]) for name in reference)


@pytest.mark.parametrize(
    ("optimizer_kwargs", "foreach"),
    [(None, True), ({"eps": 1e-5, "foreach": False}, False), ({"eps": 1e-5, "fused": True}, None)],
)
def test_the_loop_steps_adam_with_foreach_on_cpu_unless_the_user_chose(optimizer_kwargs, foreach):
    # SB3's PPO steps its Adam with torch's for-loop implementation on CPU; the loop's foreach one makes
    # the same updates bit for bit (the tests above), and a choice made in optimizer_kwargs is kept.
    model = APO("MlpPolicy", "Pendulum-v1", device="cpu", policy_kwargs={"optimizer_kwargs": optimizer_kwargs}, **SETTINGS)
    model.learn(SETTINGS["n_steps"])
    assert model.policy.optimizer.param_groups[0]["foreach"] is foreach
    assert PPO("MlpPolicy", "Pendulum-v1", device="cpu").policy.optimizer.param_groups[0]["foreach"] is None
