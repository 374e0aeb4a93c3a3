"""
SB3's save/load contract (the checks of SB3's ``tests/test_save_load.py::test_save_load``), held by
every algorithm of the package: ``get_parameters``/``set_parameters`` errors, parameters that change
and survive ``save``/``load``, the same actions after loading, and training after loading.
"""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_apo import APO, SPO, PPOPenalty, SupportAPO

ALGORITHMS = [APO, PPOPenalty, SPO, SupportAPO]


def make_env(algo):
    # SB3's test uses a Box identity env; SupportAPO needs discrete actions
    return DummyVecEnv([lambda: IdentityEnv(10) if algo is SupportAPO else IdentityEnvBox(-1, 1)])


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_save_load_keeps_sb3_contract(algo, tmp_path):
    env = make_env(algo)
    model = algo("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, policy_kwargs=dict(net_arch=[16]))
    model.learn(128)
    observations = np.concatenate([env.step([env.action_space.sample()])[0] for _ in range(10)], axis=0)
    original = copy.deepcopy(model.get_parameters())

    typo = {**copy.deepcopy(original), "I_should_not_be_a_valid_object": "and_I_am_an_invalid_tensor"}
    for exact_match in (True, False):
        with pytest.raises(ValueError):
            model.set_parameters(typo, exact_match=exact_match)
    with pytest.raises(ValueError):
        model.set_parameters(dict(list(original.items())[:-1]), exact_match=True)
    truncated = {name: dict(list(state.items())[:-1]) for name, state in original.items()}
    with pytest.raises(RuntimeError):  # torch's load_state_dict, strict
        model.set_parameters(truncated, exact_match=True)

    # Random values for every tensor but the last of each state dict (optimizers kept as they are)
    random = {
        name: state if "optim" in name else OrderedDict((key, th.rand_like(value)) for key, value in list(state.items())[:-1])
        for name, state in original.items()
    }
    model.set_parameters(random, exact_match=False)
    changed = model.get_parameters()
    for name, state in original.items():
        if "optim" in name:
            continue
        last = list(state)[-1]
        for key in state:
            assert th.allclose(state[key], changed[name][key]) == (key == last), (name, key)

    actions, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "model.zip")
    loaded = algo.load(str(tmp_path / "model.zip"), env=env, device="cpu")
    restored = loaded.get_parameters()
    for name, state in changed.items():
        if "optim" not in name:
            for key in state:
                assert th.allclose(state[key], restored[name][key]), (name, key)
    assert np.allclose(actions, loaded.predict(observations, deterministic=True)[0], 1e-4)
    loaded.learn(64)


@pytest.mark.parametrize("exact_match", [True, False])
def test_a_misspelt_object_name_is_refused(exact_match):
    model = APO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32)
    params = model.get_parameters()
    with pytest.raises(ValueError, match="polcy"):
        model.set_parameters({**params, "polcy": params["policy"]}, exact_match=exact_match)


def test_another_algorithms_state_is_skipped_with_a_warning():
    support = SupportAPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32)
    model = APO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32)
    with pytest.warns(UserWarning, match="APO has no reference_policy"):
        model.set_parameters(support.get_parameters())
    assert all(th.equal(value, model.policy.state_dict()[key]) for key, value in support.policy.state_dict().items())
