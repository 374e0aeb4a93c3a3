"""
Optuna samplers and converters of the PPO-family algorithms, in rl-zoo3's convention.

A *sampler* ``sample_<algo>_params(trial, n_actions, n_envs, additional_args)``
draws the trial's raw parameters with ``trial.suggest_*`` and returns the model's
keyword arguments. A *converter* turns the raw parameters stored in the study
(``trial.params``) into the same keyword arguments; ``--trial-id`` uses it to
rebuild a trial exactly. As in rl-zoo3, powers of two are stored as ``*_pow``
and ``gamma`` / ``gae_lambda`` as ``one_minus_*``, and the sampled
``policy_kwargs`` (architecture and activation) replace the YAML file's.

Every algorithm shares the PPO-family parameters of rl-zoo3's PPO sampler
(:func:`sample_ppo_family_params`) and adds its own:

- ``apo``: ``anchor_mode``, ``n_anchor_actions``, ``anchor_estimator`` (chi2 mode only), and either a
  fixed ``anchor_coef`` or an adaptive one (``adaptive_anchor_coef=True``: ``anchor_coef="auto"``
  holding ``anchor_target``);
- ``ppo_penalty``: ``kl_target`` and the initial ``kl_coef`` (no ``clip_range``:
  the paper's pure KL penalty; fix one with ``-params clip_range:0.2``);
- ``spo``: ``clip_range``, which is SPO's ``eps``;
- ``support_apo``: ``clip_range``, ``push_coef``, ``pull_coef``, ``top_k``, ``ref_kl_coef``, ``kl_mode``.
"""

import math
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:  # optuna is imported by rl-zoo3; the launchers report its absence themselves
    import optuna

#: The sampled network sizes: separate actor (``pi``) and critic (``vf``) layers.
NET_ARCHS: dict[str, dict[str, list[int]]] = {
    "tiny": {"pi": [64], "vf": [64]},
    "small": {"pi": [64, 64], "vf": [64, 64]},
    "medium": {"pi": [256, 256], "vf": [256, 256]},
}

#: The sampled activation functions.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def sample_ppo_family_params(trial: "optuna.Trial", n_envs: int, *, clip_range: bool = True) -> dict[str, Any]:
    """
    Draw the raw parameters every PPO-family algorithm shares (rl-zoo3's PPO search space).

    A minibatch cannot be larger than the rollout (``n_steps * n_envs``), so the range of
    ``batch_size_pow`` depends on the drawn ``n_steps_pow`` and on ``n_envs``: every draw is valid,
    and the stored parameters alone rebuild the keyword arguments.

    :param trial: the Optuna trial
    :param n_envs: the number of parallel environments of the experiment
    :param clip_range: also draw ``clip_range`` (PPO-clip's, APO's and SPO's ``eps``)
    :return: the raw parameters, as stored in the study
    """
    n_steps_pow = trial.suggest_int("n_steps_pow", 5, 11)
    max_batch_size_pow = min(10, n_steps_pow + int(math.log2(max(n_envs, 1))))
    params: dict[str, Any] = {
        "n_steps_pow": n_steps_pow,
        "batch_size_pow": trial.suggest_int("batch_size_pow", 5, max_batch_size_pow),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.002, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 5, 10, 20]),
        "max_grad_norm": trial.suggest_float("max_grad_norm", 0.3, 2.0),
        "net_arch": trial.suggest_categorical("net_arch", list(NET_ARCHS)),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    if clip_range:
        params["clip_range"] = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
    # Show the real values in the study's table, as rl-zoo3 does.
    trial.set_user_attr("gamma", 1 - params["one_minus_gamma"])
    trial.set_user_attr("n_steps", 2 ** params["n_steps_pow"])
    trial.set_user_attr("batch_size", 2 ** params["batch_size_pow"])
    return params


def convert_ppo_family_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    The converter of every PPO-family algorithm: raw study parameters to keyword arguments.

    Parameters it does not know (an algorithm's own, such as ``anchor_coef``) pass through unchanged.

    :param sampled_params: ``trial.params`` of a trial drawn by one of this module's samplers
    :return: the model's keyword arguments, with ``policy_kwargs``
    """
    hyperparams = dict(sampled_params)
    for name in ("gamma", "gae_lambda"):
        if f"one_minus_{name}" in hyperparams:
            hyperparams[name] = 1 - hyperparams.pop(f"one_minus_{name}")
    for name in ("batch_size", "n_steps"):
        if f"{name}_pow" in hyperparams:
            hyperparams[name] = 2 ** hyperparams.pop(f"{name}_pow")
    policy_kwargs: dict[str, Any] = {}
    if "net_arch" in hyperparams:
        policy_kwargs["net_arch"] = NET_ARCHS[hyperparams.pop("net_arch")]
    if "activation_fn" in hyperparams:
        policy_kwargs["activation_fn"] = ACTIVATIONS[hyperparams.pop("activation_fn")]
    if policy_kwargs:
        hyperparams["policy_kwargs"] = policy_kwargs
    if hyperparams.pop("adaptive_anchor_coef", False):  # APO: the stored flag of anchor_coef="auto"
        hyperparams["anchor_coef"] = "auto"
    return hyperparams


def sample_apo_params(trial: "optuna.Trial", n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for APO: the PPO-family parameters plus the anchor penalty's.

    :param trial: the Optuna trial
    :param n_actions: the action dimension for ``Box`` spaces, else 0 (unused)
    :param n_envs: the number of parallel environments
    :param additional_args: rl-zoo3's extra arguments (replay-buffer settings; unused)
    :return: APO's keyword arguments
    """
    params = sample_ppo_family_params(trial, n_envs)
    params["anchor_mode"] = trial.suggest_categorical("anchor_mode", ["chi2", "parity"])
    params["n_anchor_actions"] = trial.suggest_categorical("n_anchor_actions", [1, 2, 4, 8])
    if params["anchor_mode"] == "chi2":  # the parity loss has no exact form
        params["anchor_estimator"] = trial.suggest_categorical("anchor_estimator", ["sample", "exact"])
    # A fixed coefficient, or one adapted to hold the anchor divergence per update near a target;
    # stored as a flag and a float, since one Optuna parameter cannot be both a number and "auto".
    params["adaptive_anchor_coef"] = trial.suggest_categorical("adaptive_anchor_coef", [False, True])
    if params["adaptive_anchor_coef"]:
        params["anchor_target"] = trial.suggest_float("anchor_target", 3e-4, 3e-2, log=True)
    else:
        params["anchor_coef"] = trial.suggest_float("anchor_coef", 0.01, 10.0, log=True)
    return convert_ppo_family_params(params)


def sample_ppo_penalty_params(trial: "optuna.Trial", n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for PPOPenalty: the PPO-family parameters (without clipping) plus the KL target
    and the initial KL coefficient.

    :param trial: the Optuna trial
    :param n_actions: the action dimension for ``Box`` spaces, else 0 (unused)
    :param n_envs: the number of parallel environments
    :param additional_args: rl-zoo3's extra arguments (replay-buffer settings; unused)
    :return: PPOPenalty's keyword arguments
    """
    params = sample_ppo_family_params(trial, n_envs, clip_range=False)
    params["kl_target"] = trial.suggest_float("kl_target", 0.001, 0.05, log=True)
    params["kl_coef"] = trial.suggest_float("kl_coef", 0.1, 10.0, log=True)
    return convert_ppo_family_params(params)


def sample_spo_params(trial: "optuna.Trial", n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for SPO: the PPO-family parameters, ``clip_range`` being SPO's ``eps``.

    :param trial: the Optuna trial
    :param n_actions: the action dimension for ``Box`` spaces, else 0 (unused)
    :param n_envs: the number of parallel environments
    :param additional_args: rl-zoo3's extra arguments (replay-buffer settings; unused)
    :return: SPO's keyword arguments
    """
    return convert_ppo_family_params(sample_ppo_family_params(trial, n_envs))


def sample_support_apo_params(trial: "optuna.Trial", n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for SupportAPO: the PPO-family parameters plus the push, the pull, the size of
    the reference's top-K support and the KL penalty to the reference (0 switches it off).

    :param trial: the Optuna trial
    :param n_actions: the action dimension for ``Box`` spaces, else 0 (unused: SupportAPO is discrete)
    :param n_envs: the number of parallel environments
    :param additional_args: rl-zoo3's extra arguments (replay-buffer settings; unused)
    :return: SupportAPO's keyword arguments
    """
    params = sample_ppo_family_params(trial, n_envs)
    params["push_coef"] = trial.suggest_float("push_coef", 1.0, 1.5)
    params["pull_coef"] = trial.suggest_float("pull_coef", 0.001, 2.0, log=True)
    params["top_k"] = trial.suggest_categorical("top_k", [1, 2, 3, 4, 8, 16])
    params["ref_kl_coef"] = trial.suggest_categorical("ref_kl_coef", [0.0, 0.01, 0.03, 0.1, 0.3, 1.0])
    params["kl_mode"] = trial.suggest_categorical("kl_mode", ["all", "negative"])
    return convert_ppo_family_params(params)
