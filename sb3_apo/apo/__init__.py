from sb3_apo.apo.apo import APO
from sb3_apo.apo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["APO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
