"""APO: Anchored Policy Optimization (PPO-clip plus a trust region on the unsampled actions)."""

from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_apo.apo.parity import parity_anchors
from sb3_apo.common.adaptive import adapt_penalty_coef
from sb3_apo.common.checks import HyperparameterError, check_choice, check_range
from sb3_apo.common.on_policy import Minibatch, PPOFamilyAlgorithm, clipped_surrogate

#: ``anchor_coef="auto"`` keeps the adapted coefficient within these bounds (our choice): below
#: 1e-3 the anchor term no longer acts, above 1e3 it freezes the policy.
ANCHOR_COEF_BOUNDS = (1e-3, 1e3)


def parse_anchor_coef(anchor_coef: float | str) -> tuple[float, bool]:
    """
    Read ``anchor_coef`` as SB3's SAC reads ``ent_coef``: a number, ``"auto"`` (adapted, starting
    at 1.0) or ``"auto_<initial value>"`` (adapted, starting at that value, e.g. ``"auto_0.1"``).

    :param anchor_coef: the value given by the user
    :return: the initial coefficient, and whether it adapts
    :raises HyperparameterError: (a ``ValueError``) for any other value
    """
    if isinstance(anchor_coef, str):
        accepted = "a number in [0, inf), 'auto' or 'auto_<initial value>' (e.g. 'auto_0.1')"
        if anchor_coef == "auto":
            return 1.0, True
        prefix, _, initial = anchor_coef.partition("_")
        try:
            value = float(initial)
        except ValueError:
            value = float("nan")
        if prefix != "auto" or not 0 < value < float("inf"):
            raise HyperparameterError(f"`anchor_coef` must be {accepted}, with a positive initial value; got {anchor_coef!r}.")
        return value, True
    check_range("anchor_coef", anchor_coef, 0)
    return float(anchor_coef), False


class APO(PPOFamilyAlgorithm):
    """
    Anchored Policy Optimization: PPO-clip whose trust region also covers the
    actions it did not sample.

    Paper: "APO: Anchored Policy Optimization by Leveraging Unsampled Actions in
    Continuous Spaces". PPO only constrains the ratio of the executed action; APO
    adds a chi-square penalty that pulls the ratios of unsampled actions back to 1::

        L = L_clip + anchor_coef * mean_s 1/2 * E_{a' ~ pi_old(.|s), a' != a}[(r(a'|s) - 1)^2]

    The expectation is exact for ``Discrete``, ``MultiDiscrete`` (summed over
    sub-spaces) and ``MultiBinary`` (the flipped bit). For ``Box`` it is a Monte Carlo
    mean over ``n_anchor_actions`` draws from ``pi_old`` (``anchor_estimator="sample"``)
    or the closed form between the two Gaussians (``"exact"``); see ``docs/algorithms.md``.

    With ``anchor_coef="auto"`` the coefficient (``model.anchor_coef``) adapts after every
    update by the PPO paper's beta rule, so that the anchor divergence measured on the whole
    rollout (``train/anchor_divergence``) stays near ``anchor_target`` whatever ``n_epochs``
    is; it is training state, logged as ``train/anchor_coef`` and kept by ``save()``/``load()``
    and repeated ``learn()`` calls.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param clip_range: Clipping parameter ``eps`` of PPO-clip, or a schedule of the remaining progress
    :param anchor_coef: Coefficient of the anchor penalty (0 gives exactly SB3's PPO), or ``"auto"``
        (adapted, starting at 1.0), or ``"auto_<initial value>"``
    :param anchor_target: With ``anchor_coef="auto"``: the anchor divergence per update the coefficient
        holds (halved below ``anchor_target / 1.5``, doubled above ``anchor_target * 1.5``)
    :param anchor_estimator: For ``Box`` actions: ``"sample"`` (default), the Monte Carlo mean over
        ``n_anchor_actions`` draws; ``"exact"``, the closed form, which draws nothing. Discrete spaces
        are exact under both.
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
    ANCHOR_ESTIMATORS: ClassVar[tuple[str, ...]] = ("sample", "exact")

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        *,
        clip_range: float | Schedule = 0.2,
        anchor_coef: float | str = 1.0,
        anchor_target: float = 0.003,
        anchor_estimator: str = "sample",
        n_anchor_actions: int = 2,
        anchor_mode: str = "chi2",
        _init_setup_model: bool = True,
        **kwargs: Any,
    ):
        check_range("clip_range", clip_range, 0, low_open=True, allow_schedule=True)
        initial_anchor_coef, adaptive = parse_anchor_coef(anchor_coef)
        check_range("anchor_target", anchor_target, 0, low_open=True)
        check_choice("anchor_estimator", anchor_estimator, self.ANCHOR_ESTIMATORS)
        check_choice("anchor_mode", anchor_mode, self.ANCHOR_MODES)
        if anchor_mode == "parity" and anchor_estimator != "sample":
            raise HyperparameterError(
                "`anchor_estimator` applies to anchor_mode='chi2'; the parity loss has no exact form: "
                f"use anchor_estimator='sample' with anchor_mode='parity', got {anchor_estimator!r}."
            )
        super().__init__(
            policy, env, clip_range=clip_range, n_anchor_actions=n_anchor_actions, _init_setup_model=False, **kwargs
        )
        # The coefficient lives here, not in _setup_model(), which load() calls after restoring it.
        self.anchor_coef = initial_anchor_coef
        self.adaptive_anchor_coef = adaptive
        self.anchor_target = anchor_target
        self.anchor_estimator = anchor_estimator
        self.anchor_mode = anchor_mode
        if _init_setup_model:
            self._setup_model()

    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        surrogate = clipped_surrogate(batch.ratio, batch.advantages, batch.clip_range)
        if self.anchor_mode == "parity":
            anchor_loss = parity_anchors(batch.math, batch).chi2_penalty()
        elif self.anchor_estimator == "exact":
            anchor_loss = batch.math.exact_anchor_divergence(batch.old_params, batch.new_params, batch.actions).mean()
        else:
            anchor_loss = batch.anchor_penalty
        return surrogate + self.anchor_coef * anchor_loss, {
            "policy_gradient_loss": surrogate,
            "anchor_loss": anchor_loss,
        }

    def _diagnostics_needed(self) -> bool:
        return self.adaptive_anchor_coef  # the coefficient adapts to the anchor divergence of every update

    def _after_policy_update(self, diagnostics: dict[str, float]) -> None:
        self.logger.record("train/anchor_coef", self.anchor_coef)  # the coefficient this update used
        if self.adaptive_anchor_coef:
            self.anchor_coef = adapt_penalty_coef(
                self.anchor_coef, diagnostics["anchor_divergence"], self.anchor_target, bounds=ANCHOR_COEF_BOUNDS
            )
