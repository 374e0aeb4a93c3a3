"""APO: Anchored Policy Optimization (PPO-clip plus a trust region on the unsampled actions)."""

from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_apo.common.checks import check_choice, check_range
from sb3_apo.common.on_policy import Minibatch, PPOFamilyAlgorithm, clipped_surrogate


class APO(PPOFamilyAlgorithm):
    """
    Anchored Policy Optimization: PPO-clip whose trust region also covers the
    actions it did not sample.

    Paper: "APO: Anchored Policy Optimization by Leveraging Unsampled Actions in
    Continuous Spaces". PPO only constrains the ratio of the executed action; APO
    adds a chi-square penalty that pulls the ratios of unsampled actions back to 1::

        L = L_clip + anchor_coef * mean_s 1/2 * E_{a' ~ pi_old(.|s), a' != a}[(r(a'|s) - 1)^2]

    The expectation is exact for ``Discrete``, ``MultiDiscrete`` (summed over
    sub-spaces) and ``MultiBinary`` (the flipped bit), and a Monte Carlo mean over
    ``n_anchor_actions`` draws from ``pi_old`` for ``Box`` (see ``docs/algorithms.md``).

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param clip_range: Clipping parameter ``eps`` of PPO-clip, or a schedule of the remaining progress
    :param anchor_coef: Coefficient of the anchor penalty; 0 gives exactly SB3's PPO
    :param n_anchor_actions: K, anchor actions drawn per state for Box actions (and in
        ``anchor_mode="parity"`` for discrete ones)
    :param anchor_mode: ``"chi2"`` (default): the penalty above. ``"parity"``: the public
        APO code's loss, for reproducing its curves: for Box, the *executed* action's
        ``1/2 * pi_old(a|s) * (r(a|s) - 1)^2`` weighted by the old joint density; for
        discrete spaces, K unsampled actions drawn uniformly, each weighted by ``pi_old(a'|s) / K``
    :param kwargs: every other parameter of SB3's ``PPO`` (``learning_rate``, ``n_steps``,
        ``batch_size``, ``n_epochs``, ...), with the same names and defaults; see
        :class:`sb3_apo.common.on_policy.PPOFamilyAlgorithm`
    """

    ANCHOR_MODES: ClassVar[tuple[str, ...]] = ("chi2", "parity")

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        *,
        clip_range: float | Schedule = 0.2,
        anchor_coef: float = 1.0,
        n_anchor_actions: int = 2,
        anchor_mode: str = "chi2",
        _init_setup_model: bool = True,
        **kwargs: Any,
    ):
        check_range("clip_range", clip_range, 0, low_open=True, allow_schedule=True)
        check_range("anchor_coef", anchor_coef, 0)
        check_choice("anchor_mode", anchor_mode, self.ANCHOR_MODES)
        super().__init__(
            policy, env, clip_range=clip_range, n_anchor_actions=n_anchor_actions, _init_setup_model=False, **kwargs
        )
        self.anchor_coef = anchor_coef
        self.anchor_mode = anchor_mode
        if _init_setup_model:
            self._setup_model()

    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        surrogate = clipped_surrogate(batch.ratio, batch.advantages, batch.clip_range)
        anchors = batch.anchors if self.anchor_mode == "chi2" else batch.parity_anchors
        anchor_loss = anchors.chi2_penalty()
        return surrogate + self.anchor_coef * anchor_loss, {
            "policy_gradient_loss": surrogate,
            "anchor_loss": anchor_loss,
        }
