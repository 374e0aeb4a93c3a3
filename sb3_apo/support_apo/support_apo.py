"""
Support-anchored APO: PPO-clip anchored to the *support* of a frozen reference
policy, for discrete actions (spec section 5, an interpretation of "Anchored
Policy Optimization: Mitigating Exploration Collapse via Support-Constrained
Rectification").
"""

import copy
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_apo.common.checks import HyperparameterError, check_bool, check_choice, check_range
from sb3_apo.common.distributions import CategoricalMath
from sb3_apo.common.loading import read_archive
from sb3_apo.common.on_policy import Minibatch, PPOFamilyAlgorithm, clipped_surrogate
from sb3_apo.support_apo.buffers import ReferenceParamsMixin, reference_buffer_class
from sb3_apo.support_apo.manifold import log_mass, mass_log_ratio, top_k_mask

#: Where the "KL to the reference" penalty applies: ``"all"`` samples ("standard KL")
#: or only the ``"negative"`` ones, with ``A < 0`` ("KL on wrong").
KL_MODES = ("all", "negative")


def _is_sb3_archive(path: Path) -> bool:
    """Whether ``path`` is an archive of ``model.save()`` (``torch.save`` files are zip archives too)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "policy.pth" in archive.namelist()


def load_policy_state_dict(path: str | os.PathLike[str], device: th.device | str = "cpu") -> dict[str, th.Tensor]:
    """
    The policy weights stored in a file.

    Only load files you trust: a policy file is unpickled, as SB3's ``BasePolicy.load`` does.

    :param path: a model saved by ``model.save()`` (an SB3 zip archive of any algorithm
        with an actor-critic policy: ``PPO``, ``APO``, ``SupportAPO``...; the ``.zip``
        suffix may be left out), or a policy saved by ``model.policy.save()``, or a
        ``state_dict`` saved with ``torch.save``
    :param device: where to load the tensors
    :return: the policy's ``state_dict``
    """
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".zip").exists():
        path = path.with_name(path.name + ".zip")
    if not path.exists():
        raise FileNotFoundError(
            f"No reference policy at {str(path)!r}: give a model saved by model.save() or model.policy.save()."
        )
    if _is_sb3_archive(path):
        _, params = read_archive(path, device=device)
        return params["policy"]
    try:
        saved = th.load(path, map_location=device, weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError, ImportError) as error:
        raise ValueError(
            f"Cannot read the reference policy {str(path)!r}: it is neither an SB3 model archive, nor a policy "
            f"file, nor a state_dict (the file may be corrupted or truncated): {error}"
        ) from error
    if isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict):  # BasePolicy.save()
        return saved["state_dict"]
    if isinstance(saved, dict) and saved and all(isinstance(value, th.Tensor) for value in saved.values()):
        return saved
    raise ValueError(f"{str(path)!r} is neither an SB3 model archive, nor a policy file, nor a state_dict.")


def support_apo_loss(
    batch: Minibatch,
    reference_params: th.Tensor,
    *,
    push_coef: float,
    pull_coef: float,
    top_k: int,
    exclude_sampled: bool,
    kl_coef: float,
    kl_mode: str,
) -> tuple[th.Tensor, dict[str, th.Tensor]]:
    """
    The policy loss of support-anchored APO on one minibatch (spec section 5)::

        L = -mean( min(r * A', clip(r, 1-eps, 1+eps) * A') )           A' = push_coef * A if A < 0 else A
            - pull_coef * mean( 1[A < 0] * |A| * sum_i min(rho_S_i, 1 + eps) )
            + kl_coef * mean( w * KL(pi(.|s) || pi_ref(.|s)) )           w = 1[A < 0] ("negative") or 1 ("all")

    with ``rho_S_i = pi(S_i|s) / pi_old(S_i|s)`` the ratio of the mass of the safe
    manifold ``S_i(s)`` of sub-space ``i``: the ``top_k`` most probable actions of
    ``pi_ref(.|s)`` (at most ``n_i - 1``), minus the executed action if
    ``exclude_sampled``. A sub-space whose manifold is empty adds nothing.

    A term whose coefficient switches it off is computed without gradient, for
    the logs only, so that ``push_coef=1, pull_coef=0, kl_coef=0`` makes exactly
    PPO-clip's update.

    :param batch: the minibatch; its ``math`` must be a :class:`~sb3_apo.common.distributions.CategoricalMath`
    :param reference_params: ``(batch, param_dim)`` the reference policy's distribution parameters
    :param push_coef: lambda, the factor of negative advantages in the clipped surrogate
    :param pull_coef: beta, the weight of the pull towards the safe manifold
    :param top_k: K, the size of the reference's top-K set per sub-space
    :param exclude_sampled: remove the executed action from the safe manifold
    :param kl_coef: the weight of the KL penalty to the reference
    :param kl_mode: ``"all"`` or ``"negative"``, the samples the KL penalty applies to
    :return: the loss, and its named terms: ``policy_gradient_loss`` (the pushed surrogate),
        ``pull_loss``, ``ref_kl_penalty`` (when ``kl_coef > 0``), and the diagnostics
        ``safe_mass`` (mean ``pi(TopK_ref(s)|s)``, averaged over sub-spaces), ``safe_ratio``
        (mean ``rho_S`` on negative samples) and ``ref_kl`` (mean ``KL(pi || pi_ref)``)
    """
    math = batch.math
    if not isinstance(math, CategoricalMath):
        raise ValueError(f"Support-anchored APO needs Discrete or MultiDiscrete actions, got {type(math).__name__}.")
    if batch.clip_range is None:
        raise ValueError("Support-anchored APO needs a clip_range (eps).")
    advantages, eps = batch.advantages, batch.clip_range
    negative = advantages < 0

    pushed = th.where(negative, push_coef * advantages, advantages) if push_coef != 1.0 else advantages
    surrogate = clipped_surrogate(batch.ratio, pushed, eps)
    loss = surrogate
    terms: dict[str, th.Tensor] = {"policy_gradient_loss": surrogate}

    top = top_k_mask(math, reference_params, top_k)
    manifold = top & ~math.executed_mask(batch.actions) if exclude_sampled else top
    with th.set_grad_enabled(pull_coef > 0 and th.is_grad_enabled()):
        log_ratio, nonempty = mass_log_ratio(math, batch.old_params, batch.new_params, manifold)
        ratio = th.exp(log_ratio)
        rectified = th.clamp(ratio, max=1.0 + eps) * nonempty  # ratio rectification: no pull beyond 1 + eps
        pull = -(advantages.abs() * negative * rectified.sum(dim=1)).mean()
    if pull_coef > 0:
        loss = loss + pull_coef * pull
    terms["pull_loss"] = pull

    with th.set_grad_enabled(kl_coef > 0 and th.is_grad_enabled()):
        ref_kl = math.kl(batch.new_params, reference_params)
    if kl_coef > 0:
        kl_penalty = (ref_kl * negative).mean() if kl_mode == "negative" else ref_kl.mean()
        loss = loss + kl_coef * kl_penalty
        terms["ref_kl_penalty"] = kl_penalty

    with th.no_grad():
        terms["ref_kl"] = ref_kl.mean()
        top_log_mass, top_nonempty = log_mass(math, math.log_probs(batch.new_params), top)
        terms["safe_mass"] = (top_log_mass.exp() * top_nonempty).sum() / top_nonempty.sum().clamp(min=1)
        pulled = negative.unsqueeze(1) & nonempty
        terms["safe_ratio"] = (ratio * pulled).sum() / pulled.sum().clamp(min=1)
    return loss, terms


class SupportAPO(PPOFamilyAlgorithm):
    """
    Support-anchored APO: PPO-clip that keeps a frozen reference policy's
    plausible alternatives alive while the policy sharpens (spec section 5;
    the paper's exact loss is not public and this is our interpretation, see
    ``docs/support_apo.md``). For ``Discrete`` and ``MultiDiscrete`` actions.

    On samples with a negative advantage, the surrogate uses ``push_coef * A``
    (push), and a pull term raises the mass of the *safe manifold*, the
    reference's top-K actions other than the executed one, but never beyond
    the trust region ``1 + eps`` (ratio rectification)::

        L = L_clip(A') - pull_coef * mean(1[A < 0] * |A| * min(pi(S|s) / pi_old(S|s), 1 + eps))

    ``push_coef=1, pull_coef=0, kl_coef=0`` is exactly SB3's ``PPO``. The
    baselines of the paper are switches of the same class: ``kl_coef > 0``
    adds ``kl_coef * KL(pi || pi_ref)`` on all samples (``kl_mode="all"``,
    "standard KL") or on negative samples only (``kl_mode="negative"``, "KL on wrong").

    The reference policy (``model.reference_policy``, the same architecture as
    ``model.policy``) is, by default, a snapshot of the policy taken when
    ``learn()`` is first called, so that fine-tuning a pretrained policy anchors
    to it; later ``learn()`` calls keep it, and :meth:`reset_reference` replaces
    it. It is saved with the model and restored by ``load()``; a model of another
    algorithm (e.g. SB3's ``PPO``) loaded by ``SupportAPO.load()`` has none, and
    takes the snapshot when ``learn()`` is next called. Its distribution
    on each rollout is computed once, right after the rollout.

    Logs, besides PPO's keys: ``train/safe_mass`` (mean ``pi(TopK_ref(s)|s)``),
    ``train/ref_kl`` (mean ``KL(pi || pi_ref)``), ``train/safe_ratio`` (mean
    ``pi(S|s) / pi_old(S|s)`` on negative samples) and ``train/pull_loss``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param push_coef: lambda, the factor of negative advantages in the clipped surrogate (> 0)
    :param pull_coef: beta, the weight of the pull towards the safe manifold (>= 0)
    :param top_k: K, the number of the reference's most probable actions in the safe
        manifold, per sub-space; capped at ``n - 1`` for a sub-space of ``n`` actions
    :param exclude_sampled: remove the executed action from the safe manifold
    :param kl_coef: the weight of the KL penalty ``KL(pi || pi_ref)`` (0: none)
    :param kl_mode: ``"all"``: the KL penalty on every sample ("standard KL"); ``"negative"``:
        only on samples with ``A < 0`` ("KL on wrong")
    :param reference: ``None``: the reference is a snapshot of the policy when ``learn()``
        is first called; or the path of a saved model (``model.save()``) or policy
        (``model.policy.save()``) with the same policy architecture, loaded now
    :param clip_range: Clipping parameter ``eps`` of PPO-clip and of the ratio rectification,
        or a schedule of the remaining progress
    :param rollout_buffer_class: a buffer that also stores the reference's parameters (a subclass
        of :class:`sb3_apo.support_apo.buffers.ReferenceParamsMixin`); ``None``: chosen automatically
    :param kwargs: every other parameter of SB3's ``PPO`` (``learning_rate``, ``n_steps``,
        ``batch_size``, ``n_epochs``, ...), with the same names and defaults; see
        :class:`sb3_apo.common.on_policy.PPOFamilyAlgorithm`
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Discrete, spaces.MultiDiscrete)

    reference_policy: ActorCriticPolicy

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        *,
        push_coef: float = 1.05,
        pull_coef: float = 0.1,
        top_k: int = 8,
        exclude_sampled: bool = True,
        kl_coef: float = 0.0,
        kl_mode: str = "all",
        reference: str | os.PathLike[str] | None = None,
        clip_range: float | Schedule = 0.2,
        rollout_buffer_class: type[ReferenceParamsMixin] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ):
        check_range("push_coef", push_coef, 0, low_open=True)
        check_range("pull_coef", pull_coef, 0)
        check_range("top_k", top_k, 1, integer=True)
        check_bool("exclude_sampled", exclude_sampled)
        check_range("kl_coef", kl_coef, 0)
        check_choice("kl_mode", kl_mode, KL_MODES)
        check_range("clip_range", clip_range, 0, low_open=True, allow_schedule=True)
        if rollout_buffer_class is not None and not (
            isinstance(rollout_buffer_class, type) and issubclass(rollout_buffer_class, ReferenceParamsMixin)
        ):
            raise HyperparameterError(
                "`rollout_buffer_class` must also store the reference's parameters (a subclass of "
                f"sb3_apo.support_apo.buffers.ReferenceParamsMixin), or be None; got {rollout_buffer_class!r}."
            )
        if reference is not None and not isinstance(reference, (str, os.PathLike)):
            raise HyperparameterError(f"`reference` must be None or the path of a saved model or policy, got {reference!r}.")
        super().__init__(
            policy,
            env,
            clip_range=clip_range,
            rollout_buffer_class=rollout_buffer_class,  # type: ignore[arg-type]
            _init_setup_model=False,
            **kwargs,
        )
        self.push_coef = float(push_coef)
        self.pull_coef = float(pull_coef)
        self.top_k = int(top_k)
        self.exclude_sampled = bool(exclude_sampled)
        self.kl_coef = float(kl_coef)
        self.kl_mode = kl_mode
        #: where the reference came from: a path, or None for a snapshot of the policy
        self.reference = None if reference is None else os.fspath(reference)
        # Training state, set here and not in _setup_model(), which load() calls after restoring it.
        self._reference_ready = False
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if self.rollout_buffer_class is None:
            self.rollout_buffer_class = reference_buffer_class(self.observation_space)
        super()._setup_model()
        # A copy, not a new policy: building one would draw its initial weights from
        # torch's global generator and shift the rollouts.
        self.reference_policy = copy.deepcopy(self.policy)
        self.reference_policy.requires_grad_(False)
        self.reference_policy.set_training_mode(False)
        if not self._reference_ready and self.reference is not None:
            self.reset_reference(self.reference)

    def reset_reference(self, reference: str | os.PathLike[str] | None = None) -> None:
        """
        Replace the reference policy.

        :param reference: ``None``: a snapshot of the current policy; or the path of a
            saved model or policy with the same architecture (see :func:`load_policy_state_dict`)
        """
        state_dict = self.policy.state_dict() if reference is None else load_policy_state_dict(reference, self.device)
        try:
            self.reference_policy.load_state_dict(state_dict)
        except RuntimeError as error:
            source = "The current policy" if reference is None else f"The reference policy {os.fspath(reference)!r}"
            raise ValueError(
                f"{source} does not match this model's policy architecture (policy_kwargs={self.policy_kwargs!r}): {error}"
            ) from error
        self.reference = None if reference is None else os.fspath(reference)
        self._reference_ready = True

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if not self._reference_ready:
            self.reset_reference()  # the snapshot taken when learn() starts
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def set_parameters(
        self, load_path_or_dict: str | dict[str, Any], exact_match: bool = True, device: th.device | str = "auto"
    ) -> None:
        """
        As :meth:`PPOFamilyAlgorithm.set_parameters`. A complete set (``exact_match=True``) without
        ``reference_policy`` (a model of another algorithm, e.g. SB3's ``PPO``) sets no reference: it is
        taken from the policy when ``learn()`` is next called, as for a new model.
        """
        params = self._parameters_to_set(load_path_or_dict, device)
        if exact_match and "reference_policy" not in params:
            params = {**params, "reference_policy": self.reference_policy.state_dict()}
            self._reference_ready = False
        super().set_parameters(params, exact_match, device)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, torch_variables = super()._get_torch_save_params()
        return [*state_dicts, "reference_policy"], torch_variables

    def _after_rollout(self, rollout_buffer: RolloutBuffer) -> None:
        super()._after_rollout(rollout_buffer)
        rollout_buffer.store_reference_params(  # type: ignore[attr-defined]
            lambda observations: self.distribution_math.params(self.reference_policy.get_distribution(observations))
        )

    def policy_loss(self, batch: Minibatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        return support_apo_loss(
            batch,
            batch.samples.reference_params,
            push_coef=self.push_coef,
            pull_coef=self.pull_coef,
            top_k=self.top_k,
            exclude_sampled=self.exclude_sampled,
            kl_coef=self.kl_coef,
            kl_mode=self.kl_mode,
        )
