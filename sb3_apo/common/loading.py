"""
Loading a model saved by one algorithm of the family into another.

:class:`CrossAlgorithmLoading` gives SB3's ``load()`` and ``set_parameters()`` the rules
by which any algorithm of the package (and SB3's ``PPO``) continues from the others'
archives. It is mixed into :class:`~sb3_apo.common.on_policy.PPOFamilyAlgorithm`, ahead
of SB3's ``OnPolicyAlgorithm``, so that the training loop's module holds the loop only.
"""

import inspect
import io
import os
import pathlib
import pickle
import warnings
import zipfile
from typing import Any, TypeVar

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file, recursive_getattr
from stable_baselines3.common.type_aliases import GymEnv

from sb3_apo.common.buffers import DistributionParamsMixin
from sb3_apo.common.checks import HyperparameterError

SelfLoadable = TypeVar("SelfLoadable", bound=BaseAlgorithm)


def archive_name(path: str | pathlib.Path | io.BufferedIOBase) -> str:
    return repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else repr(path)


def read_archive(
    path: str | pathlib.Path | io.BufferedIOBase,
    custom_objects: dict[str, Any] | None = None,
    device: th.device | str = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    The data and the parameters of a model archive written by ``model.save()``, read with SB3's
    ``load_from_zip_file``; an unreadable file raises ``ValueError`` naming it.

    :param path: the archive (the ``.zip`` suffix may be left out), or a file object
    :param custom_objects: objects to use instead of the archive's, as in ``load()``
    :param device: where to load the parameters
    :return: the archive's data (the model's attributes) and its parameters (the state dicts)
    """
    try:
        data, params, _ = load_from_zip_file(path, device=device, custom_objects=custom_objects)
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"Cannot load {archive_name(path)}: it is not a readable model archive written by model.save() "
            f"(the file is corrupted, truncated or of another kind): {error}"
        ) from error
    if not data or not params or "policy" not in params:
        missing = "model data" if not data else "policy parameters"
        raise ValueError(
            f"Cannot load {archive_name(path)}: the archive holds no {missing} (the file is corrupted or truncated, "
            "or it was not written by model.save())."
        )
    return data, params


class CrossAlgorithmLoading:
    """
    SB3's loading, for the archives of every algorithm of the family: mixed into the
    family's base class, before SB3's ``OnPolicyAlgorithm``.
    """

    @classmethod
    def _family_base(cls) -> type:
        """The family's base class: the one that mixes this class in."""
        return next(klass for klass in cls.__mro__ if CrossAlgorithmLoading in klass.__bases__)

    @classmethod
    def _family_classes(cls) -> list[type]:
        """Every subclass of the family's base class defined so far, at any depth."""
        classes, parents = [], [cls._family_base()]
        while parents:
            for klass in parents.pop().__subclasses__():
                classes.append(klass)
                parents.append(klass)
        return classes

    @classmethod
    def own_hyperparameters(cls) -> dict[str, Any]:
        """
        The hyperparameters of this class that the family's base class (SB3's ``PPO``) does not have,
        e.g. APO's ``anchor_coef``, with their defaults: the keyword parameters of the constructors
        between this class and the base class.
        """
        base = cls._family_base()
        shared = inspect.signature(base.__init__).parameters
        own: dict[str, Any] = {}
        for klass in cls.__mro__[: cls.__mro__.index(base)]:
            if "__init__" not in vars(klass):
                continue
            for name, parameter in inspect.signature(klass.__init__).parameters.items():
                keyword = parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
                if keyword and name not in shared:
                    own.setdefault(name, parameter.default)
        return own

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfLoadable],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfLoadable:
        """
        Load a model saved by ``save()``, to predict or to continue training: SB3's ``load``, which
        also accepts the models of SB3's ``PPO`` and of the other algorithms of this package. What
        differs between the saving class and this one follows four rules:

        - **Own hyperparameters** (:meth:`own_hyperparameters`, e.g. APO's ``anchor_coef``, PPOPenalty's
          ``kl_coef``) come from the archive only when it was saved by this algorithm, that is when it holds
          at least as many of this class's own hyperparameters as of any other algorithm's of the family
          (SupportAPO's ``kl_coef`` is not PPOPenalty's); otherwise, and where the archive lacks one, they
          take this class's defaults. Other algorithms' own hyperparameters in the archive are dropped.
        - **State dicts** the archive holds and this class has no object for (SupportAPO's
          ``reference_policy``) are skipped with a warning (:meth:`set_parameters`).
        - **rollout_buffer_class**: a buffer class of SB3 or of this package (chosen automatically by the
          saving class) is chosen again for this class; a class of your own must store distribution
          parameters (:class:`~sb3_apo.common.buffers.DistributionParamsMixin`).
        - **clip_range**: a class that needs one (its default is not ``None``) refuses an archive saved
          with ``clip_range=None`` (PPOPenalty's default), naming it; give one: ``load(path, clip_range=0.2)``.

        An unreadable file raises ``ValueError`` naming it. The other parameters are SB3's
        (``BaseAlgorithm.load``); ``kwargs`` override the archive's attributes, as in SB3.
        """
        data, _ = read_archive(path, custom_objects)
        keys, own = set(data), cls.own_hyperparameters()
        family = [cls, *cls._family_classes()]
        held = {klass: len(keys & klass.own_hyperparameters().keys()) for klass in family}
        overrides: dict[str, Any] = {}
        if held[cls] < max(held.values()):  # saved by another algorithm: none of its values is ours
            overrides.update({name: default for name, default in own.items() if name in keys})
        foreign = keys & ({name for klass in family for name in klass.own_hyperparameters()} - own.keys())

        saved_buffer = data.get("rollout_buffer_class")
        if saved_buffer is not None and "rollout_buffer_class" not in kwargs:
            if saved_buffer.__module__.split(".")[0] in ("stable_baselines3", "sb3_apo"):
                overrides["rollout_buffer_class"] = None  # _setup_model() chooses this class's
            elif not issubclass(saved_buffer, DistributionParamsMixin):
                raise HyperparameterError(
                    f"{cls.__name__} cannot continue from {archive_name(path)}: its `rollout_buffer_class` "
                    f"{saved_buffer!r} does not store distribution parameters (a subclass of "
                    "sb3_apo.common.buffers.DistributionParamsMixin); give one: load(path, rollout_buffer_class=...)."
                )
        clip_range = inspect.signature(cls.__init__).parameters.get("clip_range")
        needs_clip_range = clip_range is not None and clip_range.default is not None
        if needs_clip_range and "clip_range" in data and data["clip_range"] is None and kwargs.get("clip_range") is None:
            raise HyperparameterError(
                f"{cls.__name__} needs a `clip_range`, but the model in {archive_name(path)} has none "
                f"(clip_range=None, PPOPenalty's default); give one: {cls.__name__}.load(path, "
                f"clip_range={clip_range.default!r})."
            )
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **{**overrides, **kwargs})
        for name in foreign:
            vars(model).pop(name, None)
        return model  # type: ignore[return-value]

    def set_parameters(
        self, load_path_or_dict: str | dict[str, Any], exact_match: bool = True, device: th.device | str = "auto"
    ) -> None:
        """
        SB3's ``set_parameters``, except that the state dicts of objects this model does not have
        (another algorithm's, e.g. SupportAPO's ``reference_policy``) are skipped with a warning
        instead of refused, so that ``load()`` accepts the models of the other algorithms.
        """
        params = self._parameters_to_set(load_path_or_dict, device)
        skipped = []
        for name in params:
            try:
                recursive_getattr(self, name)
            except AttributeError:
                skipped.append(name)
        if skipped:
            warnings.warn(
                f"{type(self).__name__} has no {', '.join(skipped)}: skipped the saved state of "
                f"{'it' if len(skipped) == 1 else 'them'} (saved by another algorithm).",
                stacklevel=2,
            )
        super().set_parameters({name: value for name, value in params.items() if name not in skipped}, exact_match, device)

    @staticmethod
    def _parameters_to_set(load_path_or_dict: str | dict[str, Any], device: th.device | str) -> dict[str, Any]:
        """The state dicts that ``set_parameters`` is given, read from the archive if it is given a path."""
        if isinstance(load_path_or_dict, dict):
            return load_path_or_dict
        return load_from_zip_file(load_path_or_dict, device=device, load_data=False)[1]
