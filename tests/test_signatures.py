"""Every public class writes out SB3's PPO parameters, in PPO's order, then its own, each with its ``:param:`` doc."""

import inspect

import pytest
from stable_baselines3 import PPO

from sb3_apo import APO, SPO, PPOPenalty, SupportAPO
from sb3_apo.common.on_policy import PPOFamilyAlgorithm

CLASSES = [PPOFamilyAlgorithm, APO, PPOPenalty, SPO, SupportAPO]
PPO_PARAMETERS = [name for name in inspect.signature(PPO).parameters if name != "_init_setup_model"]


@pytest.mark.parametrize("algo", CLASSES)
def test_the_signature_starts_with_ppos_parameters_in_ppos_order(algo):
    parameters = inspect.signature(algo).parameters
    assert list(parameters)[: len(PPO_PARAMETERS)] == PPO_PARAMETERS
    assert list(parameters)[-1] == "_init_setup_model"
    assert not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values())


@pytest.mark.parametrize("algo", CLASSES)
def test_every_parameter_is_documented(algo):
    documented = {line.split(":")[1].split()[1] for line in algo.__doc__.splitlines() if line.strip().startswith(":param ")}
    assert set(inspect.signature(algo).parameters) == documented


@pytest.mark.parametrize("algo", [APO, PPOPenalty, SPO, SupportAPO])
def test_learning_rate_is_taken_positionally_as_in_ppo(algo):
    assert algo("MlpPolicy", "CartPole-v1", 1e-3, 64, 32).learning_rate == 1e-3
