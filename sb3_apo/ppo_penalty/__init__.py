from sb3_apo.ppo_penalty.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_apo.ppo_penalty.ppo_penalty import PPOPenalty

__all__ = ["PPOPenalty", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
