"""
How far an update moved the policy from ``pi_old``: the APO paper's diagnostics.

They are measured once per update, after it, on the whole rollout and without
gradient, by the same procedure for every algorithm (also for SB3's ``PPO``,
through the benchmark's callback), so curves of different algorithms compare
like with like.
"""

from dataclasses import dataclass

import torch as th

from sb3_apo.common.distributions import DistributionMath


@dataclass
class UpdateDiagnostics:
    """
    Accumulates the diagnostics over the chunks of a rollout.

    - ``kl``: mean exact ``KL(pi_old || pi)`` over the states;
    - ``anchor_divergence``: mean exact ``1/2 * E_{a' ~ pi_old, a' != a}[(r(a') - 1)^2]`` over the
      states (:meth:`DistributionMath.exact_anchor_divergence`), the trust region APO's anchors
      bound and its ``anchor_coef="auto"`` holds near ``anchor_target``;
    - ``ratio_max``, ``ratio_dev``: largest ``r(a|s)`` and mean ``|r(a|s) - 1|`` of the executed actions;
    - ``anchor_ratio_max``, ``anchor_ratio_dev``: the same over anchor actions, the actions that were
      not executed (:meth:`DistributionMath.anchors`: every unsampled action for discrete spaces,
      K draws from ``pi_old`` for Box).
    """

    kl_sum: float = 0.0
    anchor_divergence_sum: float = 0.0
    n_states: int = 0
    ratio_max: float = 1.0
    ratio_dev_sum: float = 0.0
    anchor_ratio_max: float = 1.0
    anchor_ratio_dev_sum: float = 0.0
    n_anchors: int = 0

    @th.no_grad()
    def add(
        self,
        math: DistributionMath,
        old_params: th.Tensor,
        new_params: th.Tensor,
        log_ratio: th.Tensor,
        actions: th.Tensor,
        n_anchor_actions: int,
        generator: th.Generator,
    ) -> None:
        """
        Add one chunk of the rollout.

        :param math: the distribution maths of the action space
        :param old_params: ``pi_old``'s parameters on the chunk's states
        :param new_params: the updated policy's parameters on the same states
        :param log_ratio: ``log r(a|s)`` of the executed actions
        :param actions: the executed actions, as stored in the rollout buffer
        :param n_anchor_actions: K, anchors drawn per state for Box actions
        :param generator: the random generator anchors are drawn from
        """
        self.kl_sum += math.kl(old_params, new_params).sum().item()
        self.anchor_divergence_sum += math.exact_anchor_divergence(old_params, new_params, actions).sum().item()
        self.n_states += len(log_ratio)
        ratio = th.exp(log_ratio)
        self.ratio_max = max(self.ratio_max, ratio.max().item())
        self.ratio_dev_sum += (ratio - 1.0).abs().sum().item()
        anchors = math.anchors(old_params, new_params, actions, n_anchor_actions, generator)
        anchor_ratio = anchors.ratio[anchors.mask]
        if anchor_ratio.numel() > 0:
            self.anchor_ratio_max = max(self.anchor_ratio_max, anchor_ratio.max().item())
            self.anchor_ratio_dev_sum += (anchor_ratio - 1.0).abs().sum().item()
            self.n_anchors += anchor_ratio.numel()

    def as_dict(self) -> dict[str, float]:
        """The diagnostics by their logger names (without the ``train/`` prefix)."""
        values = {
            "kl": self.kl_sum / max(self.n_states, 1),
            "anchor_divergence": self.anchor_divergence_sum / max(self.n_states, 1),
            "ratio_max": self.ratio_max,
            "ratio_dev": self.ratio_dev_sum / max(self.n_states, 1),
        }
        if self.n_anchors > 0:
            values["anchor_ratio_max"] = self.anchor_ratio_max
            values["anchor_ratio_dev"] = self.anchor_ratio_dev_sum / self.n_anchors
        return values
