"""PPO with an adaptive (or fixed) KL penalty: the PPO paper's section 4."""

from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_apo.common.adaptive import adapt_penalty_coef
from sb3_apo.common.checks import check_bool, check_range
from sb3_apo.common.on_policy import Minibatch, PPOFamilyAlgorithm, clipped_surrogate


class PPOPenalty(PPOFamilyAlgorithm):
    """
    PPO with a KL penalty (PPO paper, section 4)::

        L = -mean(r * A) + beta * mean_s KL(pi_old(.|s) || pi(.|s))

    with the exact KL. With ``adaptive_kl=True`` beta (``model.kl_coef``) is updated
    after every policy update by the paper's rule
    (:func:`sb3_apo.common.adaptive.adapt_penalty_coef`, from the exact KL over the rollout); it is training state, logged as
    ``train/kl_coef`` and kept by ``save()``/``load()`` and repeated ``learn()`` calls.
    With a ``clip_range`` the surrogate is PPO-clip's ("PPO-clip + KL penalty").

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param kl_coef: The initial KL coefficient beta
    :param kl_target: The target KL ``d_targ`` of the adaptive rule
    :param adaptive_kl: Adapt beta after each update (``False``: the fixed-KL variant)
    :param kl_tolerance: beta changes when the KL leaves ``[kl_target / kl_tolerance, kl_target * kl_tolerance]``
    :param kl_adapt_factor: the factor beta is multiplied or divided by
    :param clip_range: ``None`` (default): the plain surrogate ``r * A``; a number or a schedule:
        PPO-clip's clipped surrogate with this ``eps``
    :param kwargs: every other parameter of SB3's ``PPO``, with the same names and defaults;
        see :class:`sb3_apo.common.on_policy.PPOFamilyAlgorithm`
    """

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        *,
        kl_coef: float = 1.0,
        kl_target: float = 0.01,
        adaptive_kl: bool = True,
        kl_tolerance: float = 1.5,
        kl_adapt_factor: float = 2.0,
        clip_range: float | Schedule | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ):
        check_range("kl_coef", kl_coef, 0)
        check_range("kl_target", kl_target, 0, low_open=True)
        check_range("kl_tolerance", kl_tolerance, 1, low_open=True)
        check_range("kl_adapt_factor", kl_adapt_factor, 1, low_open=True)
        check_bool("adaptive_kl", adaptive_kl)
        super().__init__(policy, env, clip_range=clip_range, _init_setup_model=False, **kwargs)
        # beta lives here, not in _setup_model(), which load() calls after restoring it
        self.kl_coef = float(kl_coef)
        self.kl_target = kl_target
        self.adaptive_kl = adaptive_kl
        self.kl_tolerance = kl_tolerance
        self.kl_adapt_factor = kl_adapt_factor
        if _init_setup_model:
            self._setup_model()

    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        if batch.clip_range is None:
            surrogate = -(batch.ratio * batch.advantages).mean()
        else:
            surrogate = clipped_surrogate(batch.ratio, batch.advantages, batch.clip_range)
        kl_penalty = batch.kl.mean()
        return surrogate + self.kl_coef * kl_penalty, {"policy_gradient_loss": surrogate, "kl_penalty": kl_penalty}

    def _diagnostics_needed(self) -> bool:
        return self.adaptive_kl  # beta adapts to the rollout KL of every update

    def _after_policy_update(self, diagnostics: dict[str, float]) -> None:
        self.logger.record("train/kl_coef", self.kl_coef)  # the beta this update used
        if self.adaptive_kl:
            self.kl_coef = adapt_penalty_coef(
                self.kl_coef, diagnostics["kl"], self.kl_target, self.kl_tolerance, self.kl_adapt_factor
            )
