"""
Loading a model saved by one algorithm of the family into another.

:class:`CrossAlgorithmLoading` gives SB3's ``load()`` and ``set_parameters()`` the rules
by which any algorithm of the package (and SB3's ``PPO``) continues from the others'
archives. It is mixed into :class:`~sb3_apo.common.on_policy.PPOFamilyAlgorithm`, ahead
of SB3's ``OnPolicyAlgorithm``, so that the training loop's module holds the loop only.

Every archive names the algorithm that saved it, and that algorithm's own hyperparameters
(its *tag*, :meth:`CrossAlgorithmLoading.algorithm_tag`), so that loading needs no guess. A
hyperparameter name means one thing across the family.
"""

import contextvars
import inspect
import io
import os
import pathlib
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file, recursive_getattr
from stable_baselines3.common.type_aliases import GymEnv

from sb3_apo.common.buffers import DistributionParamsMixin
from sb3_apo.common.checks import Check, HyperparameterError
from sb3_apo.common.env_recipe import EnvRecipe

SelfLoadable = TypeVar("SelfLoadable", bound="CrossAlgorithmLoading")

if TYPE_CHECKING:
    # Mixed into SB3's algorithms, whose loading it extends
    _AlgorithmBase = BaseAlgorithm
else:
    _AlgorithmBase = object

#: The archive's attribute that holds its tag.
TAG_ATTRIBUTE = "_algorithm_tag"

#: The state dicts that algorithms of this package save besides SB3's (``policy``, ``policy.optimizer``):
#: ``set_parameters`` skips them, with a warning, on a model that has no such object.
ALGORITHM_STATE_DICTS = frozenset({"reference_policy"})

#: Archives saved before the tag existed: the algorithm that saved one is known by a hyperparameter
#: that only its archives hold; with it, that algorithm's own hyperparameters (today's names) and
#: the attributes renamed since (old name: new name). Other untagged archives (SB3's ``PPO``, SPO)
#: hold no hyperparameter of their own.
UNTAGGED_ARCHIVES: dict[str, tuple[str, frozenset[str], dict[str, str]]] = {
    "anchor_mode": (
        "APO",
        frozenset(
            {"anchor_coef", "adaptive_anchor_coef", "anchor_target", "anchor_estimator", "anchor_mode", "n_anchor_actions"}
        ),
        {},
    ),
    "adaptive_kl": (
        "PPOPenalty",
        frozenset({"kl_coef", "kl_target", "adaptive_kl", "kl_tolerance", "kl_adapt_factor"}),
        {"n_anchor_actions": "diagnostic_anchor_actions"},
    ),
    "top_k": (
        "SupportAPO",
        frozenset({"push_coef", "pull_coef", "top_k", "exclude_sampled", "ref_kl_coef", "kl_mode", "reference"}),
        {"kl_coef": "ref_kl_coef", "n_anchor_actions": "diagnostic_anchor_actions"},
    ),
}
UNTAGGED_OTHERS: tuple[str | None, frozenset[str], dict[str, str]] = (
    None,
    frozenset(),
    {"n_anchor_actions": "diagnostic_anchor_actions"},
)

#: Set while ``load()`` restores an archive, whose state dicts may be another algorithm's.
_loading_archive: contextvars.ContextVar[bool] = contextvars.ContextVar("loading_archive", default=False)


def archive_name(path: str | pathlib.Path | io.BufferedIOBase) -> str:
    return repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else repr(path)


def read_archive(
    path: str | pathlib.Path | io.BufferedIOBase,
    custom_objects: dict[str, Any] | None = None,
    device: th.device | str = "cpu",
    load_data: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    The data and the parameters of a model archive written by ``model.save()``, read with SB3's
    ``load_from_zip_file`` (state dicts with ``weights_only=True``); an unreadable file raises
    ``ValueError`` naming it.

    :param path: the archive (the ``.zip`` suffix may be left out), or a file object
    :param custom_objects: objects to use instead of the archive's, as in ``load()``
    :param device: where to load the parameters
    :param load_data: read the data too (``False``: only the parameters, and the data is ``{}``)
    :return: the archive's data (the model's attributes) and its parameters (the state dicts)
    """
    try:
        data, params, _ = load_from_zip_file(path, device=device, custom_objects=custom_objects, load_data=load_data)
    except Exception as error:  # SB3's and torch's readers raise errors of many kinds on a damaged file
        raise ValueError(
            f"Cannot load {archive_name(path)}: it is not a readable model archive written by model.save() "
            f"(the file is corrupted, truncated or of another kind): {type(error).__name__}: {error}"
        ) from error
    if load_data and not isinstance(data, dict) or not params or "policy" not in params:
        missing = "model data" if load_data and not isinstance(data, dict) else "policy parameters"
        raise ValueError(
            f"Cannot load {archive_name(path)}: the archive holds no {missing} (the file is corrupted or truncated, "
            "or it was not written by model.save())."
        )
    return data or {}, params


def saving_algorithm(data: Mapping[str, Any]) -> tuple[str | None, frozenset[str], dict[str, str]]:
    """
    Who saved an archive: from its tag, or for an archive saved before the tag existed, from
    :data:`UNTAGGED_ARCHIVES`.

    :param data: the archive's data
    :return: the name of the algorithm (``None`` for an untagged archive of SB3's ``PPO`` or SPO), its own
        hyperparameters, and the attributes the archive holds under a former name (old name: new name)
    """
    tag = data.get(TAG_ATTRIBUTE)
    if isinstance(tag, dict) and isinstance(tag.get("algorithm"), str) and isinstance(tag.get("hyperparameters"), list):
        return tag["algorithm"], frozenset(tag["hyperparameters"]), {}
    if tag is not None:
        raise ValueError(f"The archive's algorithm tag is damaged: {tag!r}.")
    return next((known for key, known in UNTAGGED_ARCHIVES.items() if key in data), UNTAGGED_OTHERS)


class CrossAlgorithmLoading(_AlgorithmBase):
    """
    SB3's loading, for the archives of every algorithm of the family: mixed into the
    family's base class, before SB3's ``OnPolicyAlgorithm``.
    """

    #: The algorithm's own hyperparameters (those that SB3's ``PPO`` does not have), by name, with their
    #: checks: each algorithm declares its own. Their names go into the archive's tag.
    own_hyperparameters: ClassVar[dict[str, Check]] = {}
    #: The state dicts of this class that an archive of another algorithm may lack: ``load()`` keeps the
    #: model's own and tells it so (:meth:`_state_dicts_not_in_archive`).
    optional_state_dicts: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def algorithm_tag(cls) -> dict[str, Any]:
        """What the archive says about the algorithm that saved it: its name and its own hyperparameters."""
        return {"algorithm": cls.__name__, "hyperparameters": sorted(cls.own_hyperparameters)}

    @classmethod
    def check_hyperparameters(cls, values: Mapping[str, Any]) -> None:
        """Raise ``HyperparameterError`` naming the first invalid value (the family's base class defines the checks)."""
        raise NotImplementedError

    @classmethod
    def _attributes_from_arguments(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        ``load()``'s keyword arguments as the attributes they set, which SB3 sets as they are: a class
        whose constructor stores a parameter otherwise (APO's ``anchor_coef="auto"``) or under a new
        name (a deprecated keyword) maps it here, as its constructor does.
        """
        return arguments

    @classmethod
    def load(
        cls: type[SelfLoadable],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | EnvRecipe | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfLoadable:
        """
        Load a model saved by ``save()``, to predict or to continue training: SB3's ``load``, which
        also accepts the models of SB3's ``PPO`` and of the other algorithms of this package. The
        archive's values and ``kwargs`` are checked as the constructor checks its arguments. What
        differs between the saving class and this one follows four rules:

        - **Own hyperparameters** (:attr:`own_hyperparameters`, e.g. APO's ``anchor_coef``): those of the
          saving algorithm (named by the archive's tag) that this class does not have are dropped; this
          class's that the archive lacks take this class's defaults.
        - **State dicts** the archive holds and this class has no object for (SupportAPO's
          ``reference_policy``) are skipped with a warning (:meth:`set_parameters`).
        - **rollout_buffer_class**: a buffer class of SB3 or of this package (chosen automatically by the
          saving class) is chosen again for this class; a class of your own must store distribution
          parameters (:class:`~sb3_apo.common.buffers.DistributionParamsMixin`).
        - **clip_range**: a class that needs one refuses an archive saved with ``clip_range=None``
          (PPOPenalty's default), naming it; give one: ``load(path, clip_range=0.2)``.

        An unreadable file raises ``ValueError`` naming it. The other parameters are SB3's
        (``BaseAlgorithm.load``); ``kwargs`` override the archive's attributes, as in SB3.
        """
        if isinstance(env, EnvRecipe):
            env = env.build()  # the built env carries its recipe into the model
        data, _ = read_archive(path, custom_objects)
        try:
            saver, saver_hyperparameters, renamed = saving_algorithm(data)
        except ValueError as error:
            raise ValueError(f"Cannot load {archive_name(path)}: {error}") from error
        loader: Any = cls  # the family's base class, which has the class attributes used below
        own = loader.own_hyperparameters.keys()
        arguments = loader._attributes_from_arguments(dict(kwargs))
        overrides = {new: data[old] for old, new in renamed.items() if old in data}
        attributes = {**{name: value for name, value in data.items() if name not in renamed}, **overrides}
        # Another algorithm's own hyperparameters, and the former names, are not this model's attributes:
        # the attributes of this class they collide with take its defaults, the others are dropped.
        rejected = (saver_hyperparameters - own) | (renamed.keys() & data.keys())
        defaults = inspect.signature(cls).parameters
        for name in rejected & (own | loader.shared_hyperparameters.keys()) & defaults.keys():
            overrides[name] = defaults[name].default
        attributes = {name: value for name, value in attributes.items() if name not in rejected}

        saved_buffer = data.get("rollout_buffer_class")
        if saved_buffer is not None and "rollout_buffer_class" not in arguments:
            if isinstance(saved_buffer, type) and saved_buffer.__module__.split(".")[0] in ("stable_baselines3", "sb3_apo"):
                overrides["rollout_buffer_class"] = attributes["rollout_buffer_class"] = None  # _setup_model() chooses
            elif not (isinstance(saved_buffer, type) and issubclass(saved_buffer, DistributionParamsMixin)):
                raise HyperparameterError(
                    f"{cls.__name__} cannot continue from {archive_name(path)}: its `rollout_buffer_class` "
                    f"{saved_buffer!r} does not store distribution parameters (a subclass of "
                    "sb3_apo.common.buffers.DistributionParamsMixin); give one: load(path, rollout_buffer_class=...)."
                )
        if loader.needs_clip_range and attributes.get("clip_range", 0) is None and arguments.get("clip_range") is None:
            raise HyperparameterError(
                f"{cls.__name__} needs a `clip_range`, but the model in {archive_name(path)} has none "
                f"(clip_range=None, PPOPenalty's default); give one: {cls.__name__}.load(path, "
                f"clip_range={defaults['clip_range'].default!r})."
            )
        loader._check_loaded_values(path, attributes, arguments)

        overrides[TAG_ATTRIBUTE] = loader.algorithm_tag()  # the model is this class's, whoever saved the archive
        token = _loading_archive.set(True)
        try:
            model = super().load(
                path, env, device, custom_objects, print_system_info, force_reset, **{**overrides, **arguments}
            )
        finally:
            _loading_archive.reset(token)
        for name in rejected - overrides.keys():
            vars(model).pop(name, None)
        return model

    @classmethod
    def _check_loaded_values(
        cls, path: str | pathlib.Path | io.BufferedIOBase, attributes: dict[str, Any], arguments: dict[str, Any]
    ) -> None:
        """
        Check ``load()``'s keyword arguments, then the archive's values they leave, then the two together,
        as the constructor checks its arguments.

        :param path: the archive, named in the errors about its values
        :param attributes: the archive's attributes (SB3's ``_stats_window_size`` is ``stats_window_size``)
        :param arguments: ``load()``'s keyword arguments, as attributes
        """

        def public(values: Mapping[str, Any]) -> dict[str, Any]:
            return {"stats_window_size" if name == "_stats_window_size" else name: value for name, value in values.items()}

        cls.check_hyperparameters(public(arguments))
        try:
            cls.check_hyperparameters(public({name: value for name, value in attributes.items() if name not in arguments}))
        except HyperparameterError as error:
            raise HyperparameterError(f"Cannot load {archive_name(path)}: {error}") from error
        cls.check_hyperparameters(public({**attributes, **arguments}))

    def set_parameters(
        self, load_path_or_dict: str | dict[str, Any], exact_match: bool = True, device: th.device | str = "auto"
    ) -> None:
        """
        SB3's ``set_parameters``, with its errors: a ``ValueError`` for a name this model has no object for,
        and with ``exact_match`` one for a missing object. The state dicts that another algorithm of this
        package saves (:data:`ALGORITHM_STATE_DICTS`, e.g. SupportAPO's ``reference_policy``) are skipped
        with a warning on a model that has no such object, so that ``load()`` accepts the models of the
        other algorithms; while ``load()`` runs, the :attr:`optional_state_dicts` an archive lacks keep the
        model's own.
        """
        params = self._parameters_to_set(load_path_or_dict, device)
        skipped = [name for name in params if name in ALGORITHM_STATE_DICTS and not self._has_object(name)]
        if skipped:
            warnings.warn(
                f"{type(self).__name__} has no {', '.join(skipped)}: skipped the saved state of "
                f"{'it' if len(skipped) == 1 else 'them'} (saved by another algorithm).",
                stacklevel=2,
            )
            params = {name: value for name, value in params.items() if name not in skipped}
        missing = [name for name in self.optional_state_dicts if name not in params]
        if exact_match and missing and _loading_archive.get():
            params = {**params, **{name: recursive_getattr(self, name).state_dict() for name in missing}}
            self._state_dicts_not_in_archive(missing)
        super().set_parameters(params, exact_match, device)

    def _has_object(self, name: str) -> bool:
        try:
            recursive_getattr(self, name)
        except AttributeError:
            return False
        return True

    def _state_dicts_not_in_archive(self, names: list[str]) -> None:
        """
        Called by ``load()`` when the archive lacks some of the :attr:`optional_state_dicts`, which keep
        the model's own.

        :param names: the state dicts the archive lacks
        """

    @staticmethod
    def _parameters_to_set(load_path_or_dict: str | dict[str, Any], device: th.device | str) -> dict[str, Any]:
        """The state dicts that ``set_parameters`` is given, read from the archive if it is given a path."""
        if isinstance(load_path_or_dict, dict):
            return load_path_or_dict
        return read_archive(load_path_or_dict, device=device, load_data=False)[1]
