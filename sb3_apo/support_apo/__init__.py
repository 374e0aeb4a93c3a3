from sb3_apo.support_apo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_apo.support_apo.support_apo import SupportAPO, load_policy_state_dict, support_apo_loss

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "SupportAPO", "load_policy_state_dict", "support_apo_loss"]
