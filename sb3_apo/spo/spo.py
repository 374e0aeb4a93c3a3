"""SPO: Simple Policy Optimization (Xie et al.)."""

from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_apo.common.checks import check_range
from sb3_apo.common.on_policy import Minibatch, PPOFamilyAlgorithm


class SPO(PPOFamilyAlgorithm):
    """
    Simple Policy Optimization: a quadratic penalty replaces PPO's clipping::

        L = -mean(r * A - |A| / (2 * eps) * (r - 1)^2)

    Its optimum in ``r`` is exactly ``1 + sign(A) * eps``, and unlike clipping its
    gradient is never zeroed, so the ratio is pulled back once it overshoots.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param clip_range: ``eps``, the ratio's distance from 1 at the optimum, or a schedule
    :param kwargs: every other parameter of SB3's ``PPO``, with the same names and defaults;
        see :class:`sb3_apo.common.on_policy.PPOFamilyAlgorithm`
    """

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        *,
        clip_range: float | Schedule = 0.2,
        **kwargs: Any,
    ):
        check_range("clip_range", clip_range, 0, low_open=True, allow_schedule=True)
        super().__init__(policy, env, clip_range=clip_range, **kwargs)

    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        ratio, advantages, eps = batch.ratio, batch.advantages, batch.clip_range
        if eps == 0:
            # A schedule that reached 0 (e.g. the last update of "lin_0.2"): the optimum is r = 1,
            # so the policy does not move; |A| / (2 * 0) would turn the loss into NaN.
            surrogate = 0.0 * ratio.sum()
        else:
            surrogate = -(ratio * advantages - advantages.abs() / (2 * eps) * (ratio - 1) ** 2).mean()
        return surrogate, {"policy_gradient_loss": surrogate}
