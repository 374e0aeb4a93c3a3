"""Policy aliases of this algorithm: SB3's actor-critic policies."""

from sb3_apo.common.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
