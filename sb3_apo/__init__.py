"""Stable-Baselines3 algorithms of the PPO family: APO, PPOPenalty and SPO."""

from importlib.metadata import PackageNotFoundError, version

from sb3_apo.apo import APO
from sb3_apo.common.env_recipe import EnvRecipe, VecEnvRecipe
from sb3_apo.ppo_penalty import PPOPenalty
from sb3_apo.spo import SPO
from sb3_apo.support_apo import SupportAPO

try:
    __version__ = version("sb3-apo")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.0.0"

__all__ = ["APO", "SPO", "EnvRecipe", "PPOPenalty", "SupportAPO", "VecEnvRecipe", "__version__"]
