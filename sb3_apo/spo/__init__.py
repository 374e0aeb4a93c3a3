from sb3_apo.spo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_apo.spo.spo import SPO

__all__ = ["SPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
