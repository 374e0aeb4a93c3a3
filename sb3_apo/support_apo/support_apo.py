"""
Support-anchored APO: PPO-clip anchored to the *support* of a frozen reference
policy, for discrete actions (``docs/support_apo.md``, an interpretation of "Anchored
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

from sb3_apo.common.buffers import DistributionParamsMixin
from sb3_apo.common.checks import Check, HyperparameterError, check_bool, in_range, one_of, subclass_of
from sb3_apo.common.distributions import CategoricalMath
from sb3_apo.common.env_recipe import EnvRecipe
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

    An SB3 archive and a ``state_dict`` file are read with ``weights_only=True``, which runs no code
    from the file; a policy saved by ``model.policy.save()`` holds pickled objects (its constructor's
    arguments) and is unpickled as SB3's ``BasePolicy.load`` does: only load such files, and SB3
    archives (whose data SB3 unpickles), from sources you trust.

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
    if not path.is_file():
        raise ValueError(
            f"The reference policy {str(path)!r} is not a file: give a model saved by model.save() or model.policy.save()."
        )
    if _is_sb3_archive(path):
        _, params = read_archive(path, device=device)
        return params["policy"]
    try:
        try:
            saved = th.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError:  # a policy file of BasePolicy.save(), which pickles its constructor's arguments
            saved = th.load(path, map_location=device, weights_only=False)
    except Exception as error:  # unpickling runs the file's code, which may raise anything
        raise ValueError(
            f"Cannot read the reference policy {str(path)!r}: it is neither an SB3 model archive, nor a policy "
            f"file, nor a state_dict (the file may be corrupted or truncated): {type(error).__name__}: {error}"
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
    ref_kl_coef: float,
    kl_mode: str,
) -> tuple[th.Tensor, dict[str, th.Tensor]]:
    """
    The policy loss of support-anchored APO on one minibatch (``docs/support_apo.md``, "The objective")::

        L = -mean( min(r * A', clip(r, 1-eps, 1+eps) * A') )           A' = push_coef * A if A < 0 else A
            - pull_coef * mean( 1[A < 0] * |A| * sum_i min(rho_S_i, 1 + eps) )
            + ref_kl_coef * mean( w * KL(pi(.|s) || pi_ref(.|s)) )       w = 1[A < 0] ("negative") or 1 ("all")

    with ``rho_S_i = pi(S_i|s) / pi_old(S_i|s)`` the ratio of the mass of the safe
    manifold ``S_i(s)`` of sub-space ``i``: the ``top_k`` most probable actions of
    ``pi_ref(.|s)`` (at most ``n_i - 1``), minus the executed action if
    ``exclude_sampled``. A sub-space whose manifold is empty adds nothing.

    A term whose coefficient switches it off is computed without gradient, for
    the logs only, so that ``push_coef=1, pull_coef=0, ref_kl_coef=0`` makes exactly
    PPO-clip's update.

    :param batch: the minibatch; its ``math`` must be a :class:`~sb3_apo.common.distributions.CategoricalMath`
    :param reference_params: ``(batch, param_dim)`` the reference policy's distribution parameters
    :param push_coef: lambda, the factor of negative advantages in the clipped surrogate
    :param pull_coef: beta, the weight of the pull towards the safe manifold
    :param top_k: K, the size of the reference's top-K set per sub-space
    :param exclude_sampled: remove the executed action from the safe manifold
    :param ref_kl_coef: the weight of the KL penalty to the reference
    :param kl_mode: ``"all"`` or ``"negative"``, the samples the KL penalty applies to
    :return: the loss, and its named terms: ``policy_gradient_loss`` (the pushed surrogate),
        ``pull_loss``, ``ref_kl_penalty`` (when ``ref_kl_coef > 0``), and the diagnostics
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

    with th.set_grad_enabled(ref_kl_coef > 0 and th.is_grad_enabled()):
        ref_kl = math.kl(batch.new_params, reference_params)
    if ref_kl_coef > 0:
        kl_penalty = (ref_kl * negative).mean() if kl_mode == "negative" else ref_kl.mean()
        loss = loss + ref_kl_coef * kl_penalty
        terms["ref_kl_penalty"] = kl_penalty

    with th.no_grad():
        terms["ref_kl"] = ref_kl.mean()
        top_log_mass, top_nonempty = log_mass(math, math.log_probs(batch.new_params), top)
        terms["safe_mass"] = (top_log_mass.exp() * top_nonempty).sum() / top_nonempty.sum().clamp(min=1)
        pulled = negative.unsqueeze(1) & nonempty
        terms["safe_ratio"] = (ratio * pulled).sum() / pulled.sum().clamp(min=1)
    return loss, terms


def _check_reference(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise HyperparameterError(f"`{name}` must be None or the path of a saved model or policy, got {value!r}.")


class SupportAPO(PPOFamilyAlgorithm):
    """
    Support-anchored APO: PPO-clip that keeps a frozen reference policy's
    plausible alternatives alive while the policy sharpens (the paper's exact
    loss is not public and this is our interpretation, see ``docs/support_apo.md``).
    For ``Discrete`` and ``MultiDiscrete`` actions.

    On samples with a negative advantage, the surrogate uses ``push_coef * A``
    (push), and a pull term raises the mass of the *safe manifold*, the
    reference's top-K actions other than the executed one, but never beyond
    the trust region ``1 + eps`` (ratio rectification)::

        L = L_clip(A') - pull_coef * mean(1[A < 0] * |A| * min(pi(S|s) / pi_old(S|s), 1 + eps))

    ``push_coef=1, pull_coef=0, ref_kl_coef=0`` is exactly SB3's ``PPO``. The
    baselines of the paper are switches of the same class: ``ref_kl_coef > 0``
    adds ``ref_kl_coef * KL(pi || pi_ref)`` on all samples (``kl_mode="all"``,
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
    :param learning_rate: The learning rate, or a schedule of the remaining progress (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size (as in SB3's ``PPO``, one that does not divide ``n_steps * n_envs``,
        or exceeds it, gives a warning)
    :param n_epochs: Number of epochs when optimizing the loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter ``eps`` of PPO-clip and of the ratio rectification,
        or a schedule of the remaining progress
    :param clip_range_vf: Clipping parameter for the value function; ``None`` (default): no value clipping
    :param normalize_advantage: Whether to normalize the advantage per minibatch
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping (``inf``: no clipping)
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param rollout_buffer_class: Rollout buffer class to use; it must store distribution parameters
        (a subclass of :class:`sb3_apo.common.buffers.DistributionParamsMixin`). ``None``: chosen automatically
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Stop the epochs of an update early when the approximate KL exceeds ``1.5 * target_kl``
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param diagnostic_anchor_actions: K, the anchor actions drawn per state for a Box action space in the
        anchor-ratio diagnostics measured after each update (``train/anchor_ratio_max``, ``train/anchor_ratio_dev``)
    :param diagnostics_freq: measure the diagnostics (``train/kl``, ``train/ratio_max``,
        ``train/anchor_ratio_max`` ...) after every ``diagnostics_freq``-th update only (1: after every
        update; the measurement costs one forward pass over the rollout). An algorithm whose state
        adapts to them (PPOPenalty's adaptive ``beta``) measures after every update regardless
        (:meth:`PPOFamilyAlgorithm._diagnostics_needed`); ``_after_policy_update`` runs after the
        updates that were measured
    :param async_rollouts: Collect the next rollout in an actor process while the learner trains on the
        current one (decoupled PPO, see ``docs/async.md``); ``False``: SB3's synchronous loop, unchanged
    :param max_policy_lag: With ``async_rollouts``, the number of updates the policy that collected a
        rollout is behind the policy trained on it (0: no overlap, the synchronous update)
    :param n_actors: With ``async_rollouts``, the number of actor processes; above 1, each steps its own
        contiguous share of the envs (a ``DummyVecEnv``, optionally in ``VecNormalize``), and their
        rollouts are joined into one (see ``docs/async.md``). An env given by its id is made with one env
        per actor
    :param importance_weight_max: With ``async_rollouts``, ``c``, the truncation of the importance weights
        ``min(pi_prox(a|s) / pi_b(a|s), c)`` of the policy-gradient term
    :param value_targets: With ``async_rollouts``, the value targets and advantages of a lagged rollout:
        ``"gae"``, GAE from the values recorded by the actor; ``"vtrace"``, V-trace from the learner's values
    :param correct_policy_lag: With ``async_rollouts``, whether a lagged rollout is corrected (decoupled PPO:
        the learner's policy is ``pi_old`` and the policy gradient is weighted by ``w``). ``False``: the
        rollout is trained on as if it were on-policy, with the behaviour policy as ``pi_old`` and no
        weights, as Cogment-verse's asynchronous PPO does; for comparisons, not recommended
    :param actor_backend: With ``async_rollouts``, where the actors run: ``"fork"``, processes forked from
        this one, which step its ``VecEnv``; ``"ray"``, Ray actors anywhere on the cluster that
        ``ray.init()`` reaches (``RAY_ADDRESS``; without it, a local instance started and stopped here),
        which build their envs from a recipe: pass ``env`` as an env id or a
        :class:`~sb3_apo.common.env_recipe.VecEnvRecipe` (see ``docs/async.md``)
    :param ray_actor_options: With ``actor_backend="ray"``, the options of each Ray actor
        (``ray.remote``'s: e.g. ``{"num_cpus": 1, "resources": {"simulator": 1}}``)
        :param push_coef: lambda, the factor of negative advantages in the clipped surrogate (> 0)
    :param pull_coef: beta, the weight of the pull towards the safe manifold (>= 0)
    :param top_k: K, the number of the reference's most probable actions in the safe
        manifold, per sub-space; capped at ``n - 1`` for a sub-space of ``n`` actions
    :param exclude_sampled: remove the executed action from the safe manifold
    :param ref_kl_coef: the weight of the KL penalty ``KL(pi || pi_ref)`` (0: none)
    :param kl_mode: ``"all"``: the KL penalty on every sample ("standard KL"); ``"negative"``:
        only on samples with ``A < 0`` ("KL on wrong")
    :param reference: ``None``: the reference is a snapshot of the policy when ``learn()``
        is first called; or the path of a saved model (``model.save()``) or policy
        (``model.policy.save()``) with the same policy architecture, loaded now
        (see :func:`load_policy_state_dict` for the files that must be trusted)
    :param kl_coef: Deprecated: ``ref_kl_coef``, which it sets
    :param n_anchor_actions: Deprecated: ``diagnostic_anchor_actions``, which it sets
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Discrete, spaces.MultiDiscrete)
    shared_hyperparameters: ClassVar[dict[str, Check]] = {
        **PPOFamilyAlgorithm.shared_hyperparameters,
        "rollout_buffer_class": subclass_of(ReferenceParamsMixin, "also store the reference's parameters"),
    }
    own_hyperparameters: ClassVar[dict[str, Check]] = {
        "push_coef": in_range(0, low_open=True),
        "pull_coef": in_range(0),
        "top_k": in_range(1, integer=True),
        "exclude_sampled": check_bool,
        "ref_kl_coef": in_range(0),
        "kl_mode": one_of(*KL_MODES),
        "reference": _check_reference,
    }
    renamed_keywords: ClassVar[dict[str, str]] = {
        "kl_coef": "ref_kl_coef",
        "n_anchor_actions": "diagnostic_anchor_actions",
    }
    optional_state_dicts: ClassVar[tuple[str, ...]] = ("reference_policy",)

    reference_policy: ActorCriticPolicy

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | EnvRecipe,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        diagnostic_anchor_actions: int = 2,
        diagnostics_freq: int = 1,
        async_rollouts: bool = False,
        max_policy_lag: int = 1,
        n_actors: int = 1,
        importance_weight_max: float = 1.0,
        value_targets: str = "gae",
        correct_policy_lag: bool = True,
        actor_backend: str = "fork",
        ray_actor_options: dict[str, Any] | None = None,
        push_coef: float = 1.05,
        pull_coef: float = 0.1,
        top_k: int = 8,
        exclude_sampled: bool = True,
        ref_kl_coef: float = 0.0,
        kl_mode: str = "all",
        reference: str | os.PathLike[str] | None = None,
        kl_coef: float | None = None,
        n_anchor_actions: int | None = None,
        _init_setup_model: bool = True,
    ):
        own = dict(
            push_coef=push_coef,
            pull_coef=pull_coef,
            top_k=top_k,
            exclude_sampled=exclude_sampled,
            ref_kl_coef=self._renamed_argument("kl_coef", kl_coef, ref_kl_coef),
            kl_mode=kl_mode,
            reference=reference,
        )
        self.check_hyperparameters(own)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            diagnostic_anchor_actions=self._renamed_argument("n_anchor_actions", n_anchor_actions, diagnostic_anchor_actions),
            diagnostics_freq=diagnostics_freq,
            async_rollouts=async_rollouts,
            max_policy_lag=max_policy_lag,
            n_actors=n_actors,
            importance_weight_max=importance_weight_max,
            value_targets=value_targets,
            correct_policy_lag=correct_policy_lag,
            actor_backend=actor_backend,
            ray_actor_options=ray_actor_options,
            _init_setup_model=False,
        )
        self.push_coef = float(push_coef)
        self.pull_coef = float(pull_coef)
        self.top_k = int(top_k)
        self.exclude_sampled = bool(exclude_sampled)
        self.ref_kl_coef = float(own["ref_kl_coef"])
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

    def _state_dicts_not_in_archive(self, names: list[str]) -> None:
        # A model of another algorithm (e.g. SB3's PPO) sets no reference: it is taken from the
        # policy when learn() is next called, as for a new model.
        self._reference_ready = False

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, torch_variables = super()._get_torch_save_params()
        return [*state_dicts, "reference_policy"], torch_variables

    def _after_rollout(self, rollout_buffer: DistributionParamsMixin) -> None:
        super()._after_rollout(rollout_buffer)
        assert isinstance(rollout_buffer, ReferenceParamsMixin), "SupportAPO's buffer keeps the reference's parameters"
        rollout_buffer.store_reference_params(
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
            ref_kl_coef=self.ref_kl_coef,
            kl_mode=self.kl_mode,
        )
