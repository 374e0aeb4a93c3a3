"""
Rollout actors on a Ray cluster (``actor_backend="ray"``): one Ray actor per shard of the envs,
placed anywhere on the cluster that ``ray.init()`` connects to, behind the same
:class:`~sb3_apo.async_rollouts.rollout.RolloutActor` interface as the forked actors.

- **Where.** With ``RAY_ADDRESS`` set, Ray connects to that cluster; otherwise the package starts
  a local instance (whose workers run at the learner's niceness, not Ray's default 15), and shuts
  it down when the actors close. A Ray that the user initialised is used as it is, and left running.
- **Envs.** A Ray actor cannot inherit the learner's ``VecEnv``: it builds its shard from the
  model's :class:`~sb3_apo.common.env_recipe.EnvRecipe`, with the seeds the same envs have in the
  learner, and takes the learner's ``VecNormalize`` statistics, observations and random state, so
  that from one recipe and seed its rollouts are the forked actors' (:class:`RayRolloutActor`).
- **Transfers.** The weights go into the object store once per update (``ray.put``), and every
  actor gets the reference; rollouts come back as numpy arrays, which Ray reads without a copy on
  the learner's node.
- **Faults.** An actor that fails (its process or node lost, or an error in its env) is restarted
  once, with a fresh env, and asked again for the rollouts it owed; a second failure of the same
  actor stops training with its traceback and node. An actor that returns no rollout for
  :data:`~sb3_apo.async_rollouts.transport.SILENCE_TIMEOUT_S` seconds stops training too.
  Closing kills this package's actors only.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import os
import random
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch as th
from ray.exceptions import GetTimeoutError, RayError

from sb3_apo.async_rollouts.actor import ActorGroup, RolloutCollector, own_random_stream
from sb3_apo.async_rollouts.rollout import Rollout, RolloutActorError
from sb3_apo.async_rollouts.shards import Statistics, copy_statistics, env_indices, select_envs
from sb3_apo.async_rollouts.transport import SILENCE_TIMEOUT_S
from sb3_apo.common.env_recipe import EnvRecipe

if TYPE_CHECKING:
    from sb3_apo.common.on_policy import PPOFamilyAlgorithm

#: Times an actor is restarted after a failure before training stops.
MAX_RESTARTS = 1

#: Seconds given to the cluster to place the actors and build their envs.
PLACEMENT_TIMEOUT_S = SILENCE_TIMEOUT_S


@dataclass
class ActorStart:
    """
    What a Ray actor takes from the learner when it starts, to go on where the learner is.

    :param model: the model, as ``save()`` writes it
    :param indices: the envs of the actor's shard
    :param index: the actor's index
    :param n_actors: the number of actors
    :param env_seed: the seed the learner's first env was reset with (env ``i`` with ``env_seed + i``),
        ``None`` when the actor's envs start from a reset of their own
    :param last_obs: the learner's observations of the shard's envs, with ``env_seed``
    :param last_episode_starts: the learner's episode starts of the shard's envs, with ``env_seed``
    :param statistics: the learner's ``VecNormalize`` statistics, or ``None``
    :param random_state: the learner's torch, numpy and Python random states
    """

    model: bytes
    indices: list[int]
    index: int
    n_actors: int
    env_seed: int | None
    last_obs: Any
    last_episode_starts: np.ndarray | None
    statistics: Statistics | None
    random_state: tuple[th.Tensor, Any, Any]


class RayRolloutActor:
    """
    The Ray actor (made remote by :class:`RayActorGroup`): builds its shard of the envs from the
    recipe, loads the model on the CPU with one torch thread, and collects one rollout per
    :meth:`collect` call, in the order they were made.

    :param algorithm: the model's class
    :param recipe: the recipe of the learner's envs
    :param start: the learner's state to go on from
    """

    def __init__(self, algorithm: type[PPOFamilyAlgorithm], recipe: EnvRecipe, start: ActorStart):
        th.set_num_threads(1)
        # As in the forked actors: observations are checked at every step instead (sb3_apo/common/_torch_compat.py)
        th.distributions.Distribution.set_default_validate_args(False)
        indices = start.indices
        # the learner's env went through SB3's wrapping too (e.g. VecTransposeImage for images)
        env = algorithm._wrap_env(recipe.build(len(indices), indices[0]), verbose=0)
        model = algorithm.load(io.BytesIO(start.model), env=env, device="cpu")
        torch_state, numpy_state, python_state = start.random_state
        th.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        if start.env_seed is not None:
            env.seed(start.env_seed + indices[0])
            env.reset()  # the envs' states are then those of the learner's, whose observations are taken
            # (copies: arrays read from the object store are read-only)
            model._last_obs, model._last_episode_starts = copy.deepcopy((start.last_obs, start.last_episode_starts))
        else:  # the envs start from a reset of their own, seeded from the learner's random state
            env.seed(int(np.random.randint(0, 2**31)) + indices[0])
        vec_normalize = model.get_vec_normalize_env()
        if vec_normalize is not None and start.statistics is not None:
            # SB3 declares obs_rms by its Dict-observation branch; a Box env's is one RunningMeanStd
            vec_normalize.obs_rms, vec_normalize.ret_rms = copy_statistics(start.statistics)  # type: ignore[assignment]
        if start.n_actors > 1:
            own_random_stream(start.index)
        # Always the shard's protocol (it reports the moments it adds), which its group expects, even alone
        self.collector = RolloutCollector(
            model, threading.Event(), heartbeat=None, reset_env=start.env_seed is None, shard=True
        )
        self._idle_since = time.perf_counter()  # the actor's own clock: the learner's may be another machine's

    def where(self) -> tuple[str, str, int]:
        """The actor's host name, Ray node id and process id."""
        return socket.gethostname(), ray.get_runtime_context().get_node_id(), os.getpid()

    def collect(self, policy_version: int, weights: dict[str, np.ndarray], reported_by_others: list[Statistics]) -> Rollout:
        """
        One rollout with these weights (Ray resolves the weights' reference before the call). The
        requests run one at a time, in order: the actor waited for this one since the last ended.
        """
        idle_s = time.perf_counter() - self._idle_since
        rollout = self.collector.collect(policy_version, weights, reported_by_others, actor_idle_s=idle_s)
        assert rollout is not None, "a Ray actor's rollouts are never stopped midway"
        self._idle_since = time.perf_counter()
        return rollout


#: Whether this package has used Ray in this process: its threads outlive ``ray.shutdown()``, which
#: makes forking this process unsafe (forked actors warn, :class:`~sb3_apo.async_rollouts.actor.ForkedRolloutActor`).
ray_has_run_here = False


def connect() -> bool:
    """
    Connect to Ray: the cluster of ``RAY_ADDRESS`` where it is set (Ray reads it), else a local
    instance started here. A Ray already initialised in this process is used as it is.

    :return: whether this call initialised Ray (and so the caller shuts it down)
    """
    global ray_has_run_here
    ray_has_run_here = True
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        # Ray starts its workers at niceness 15 by default: on a machine whose cores the learner keeps
        # busy, such actors would collect only while it waits. Forked actors run at the learner's own.
        ray.init(address="local", include_dashboard=False, log_to_driver=True, _system_config={"worker_niceness": 0})
    return True


@dataclass
class _Request:
    policy_version: int
    weights: ray.ObjectRef
    rollout: ray.ObjectRef


class _ActorSlot:
    """
    One shard's Ray actor as the learner holds it: the requests it owes, the restarts it had, and
    where it runs. Not itself a :class:`RolloutActor`: its group keeps the statistics it restarts with.
    """

    def __init__(self, group: RayActorGroup, index: int, indices: list[int]):
        self.group, self.index, self.indices = group, index, indices
        self.handle: Any = None
        self.where: tuple[str, str, int] | None = None
        self.requests: collections.deque[_Request] = collections.deque()
        self.restarts = 0

    @property
    def name(self) -> str:
        if self.where is None:
            return f"Ray rollout actor {self.index}"
        host, node, pid = self.where
        return f"Ray rollout actor {self.index} (pid {pid} on {host}, node {node[:12]})"

    @property
    def pid(self) -> int | None:
        return None if self.where is None else self.where[2]

    def launch(self, start: ActorStart) -> ray.ObjectRef:
        """Create the Ray actor; returns the reference of its :meth:`RayRolloutActor.where`, ready once it is built."""
        group = self.group
        self.handle = group.remote_class.options(**group.actor_options).remote(type(group.model), group.recipe, start)
        self.where = None
        return self.handle.where.remote()

    def send_weights(self, policy_version: int, weights: ray.ObjectRef, reported_by_others: list[Statistics]) -> None:
        rollout = self.handle.collect.remote(policy_version, weights, list(reported_by_others))
        self.requests.append(_Request(policy_version, weights, rollout))

    def receive_rollout(self) -> Rollout:
        """The oldest rollout requested, restarting the actor once if it failed."""
        while True:
            request = self.requests[0]
            try:
                rollout = ray.get(request.rollout, timeout=SILENCE_TIMEOUT_S)
            except GetTimeoutError as error:
                raise RolloutActorError(
                    f"The {self.name} returned no rollout for {SILENCE_TIMEOUT_S:g} s; training stopped."
                ) from error
            except RayError as error:
                if self.restarts >= MAX_RESTARTS:
                    raise RolloutActorError(
                        f"The {self.name} failed again after {self.restarts} restart(s); training stopped:\n{error}"
                    ) from error
                self.group.restart(self, error)
                continue
            self.requests.popleft()
            return rollout

    def close(self) -> None:
        """Kill the Ray actor, if any (a handle of this group's, never another's)."""
        if self.handle is not None:
            handle, self.handle = self.handle, None
            with contextlib.suppress(RayError, ValueError):
                ray.kill(handle, no_restart=True)


class RayActorGroup(ActorGroup):
    """
    The Ray backend: ``n_actors`` Ray actors, each stepping a shard of the envs built from the
    model's recipe, joined as the forked actors are (:class:`~sb3_apo.async_rollouts.actor.ActorGroup`).

    :param model: the algorithm; it must hold a recipe of its envs (``model.env_recipe``)
    :param n_actors: the number of actors
    :param reset_env: the envs start from a reset of their own (an earlier actor moved the learner's on)
    """

    def __init__(self, model: PPOFamilyAlgorithm, n_actors: int, reset_env: bool = False):
        assert model.env is not None
        recipe = model.env_recipe
        if recipe is None:
            raise RolloutActorError(  # the constructor and set_env() refuse such an env first: a safety net
                "actor_backend='ray' builds the envs from a recipe, and the model's env has none: pass the env as an "
                "env id or a sb3_apo.VecEnvRecipe."
            )
        self.model, self.recipe, self.reset_env = model, recipe, reset_env
        self.actor_options = {"max_restarts": 0, **(model.ray_actor_options or {})}
        super().__init__(
            model, [_ActorSlot(self, index, indices) for index, indices in enumerate(env_indices(recipe.n_envs, n_actors))]
        )
        self.remote_class: Any = None
        self._started_ray = False
        #: Restarts of failed actors since the group started (logged as ``async/actor_restarts``).
        self.restarts = 0

    @property
    def nodes(self) -> list[str | None]:
        """The Ray node id of each actor, once started."""
        return [None if slot.where is None else slot.where[1] for slot in self.actors]

    def start(self) -> None:
        self._started_ray = connect()
        try:
            self.remote_class = ray.remote(RayRolloutActor)
            model = self.model
            buffer = io.BytesIO()
            model.save(buffer)
            self._model_bytes = buffer.getvalue()
            env_seed = None
            if not self.reset_env:
                env_seed = model.seed if model.seed is not None else self.recipe.seed
            random_state = (th.get_rng_state(), np.random.get_state(), random.getstate())
            ready = [slot.launch(self._start_state(slot, env_seed, random_state, self._statistics)) for slot in self.actors]
            self._wait_placed(self.actors, ready)
        except BaseException:
            self.close()
            raise

    def _start_state(
        self, slot: _ActorSlot, env_seed: int | None, random_state: tuple[Any, Any, Any], statistics: Statistics | None
    ) -> ActorStart:
        model = self.model
        last_obs = last_episode_starts = None
        if env_seed is not None:
            assert model._last_obs is not None and model._last_episode_starts is not None, "set by SB3's _setup_learn()"
            last_obs = select_envs(model._last_obs, slot.indices)
            last_episode_starts = model._last_episode_starts[slot.indices]
        return ActorStart(
            model=self._model_bytes,
            indices=slot.indices,
            index=slot.index,
            n_actors=len(self.actors),
            env_seed=env_seed,
            last_obs=last_obs,
            last_episode_starts=last_episode_starts,
            statistics=None if statistics is None else copy_statistics(statistics),
            random_state=random_state,
        )

    def _wait_placed(self, slots: list[_ActorSlot], ready: list[ray.ObjectRef]) -> None:
        """Wait until the slots' actors run, and record where; a clear error if the cluster cannot place them."""
        done, pending = ray.wait(ready, num_returns=len(ready), timeout=PLACEMENT_TIMEOUT_S)
        if pending:
            raise RolloutActorError(
                f"The Ray cluster placed {len(done)} of {len(ready)} rollout actors in {PLACEMENT_TIMEOUT_S:g} s; each asks "
                f"for {self.actor_options} (ray_actor_options) and the cluster has {ray.cluster_resources()}."
            )
        for slot, reference in zip(slots, ready):
            try:
                slot.where = ray.get(reference)
            except RayError as error:
                raise RolloutActorError(f"The {slot.name} could not start:\n{error}") from error

    def restart(self, slot: _ActorSlot, error: BaseException) -> None:
        """
        Replace a failed actor by a new one, with fresh envs and the learner's statistics, and ask it
        again for the rollouts the failed one owed (with the same weights, so the lag stays bounded).
        """
        warnings.warn(f"The {slot.name} failed and is restarted (once):\n{error}", RuntimeWarning, stacklevel=2)
        slot.close()
        slot.restarts += 1
        self.restarts += 1
        random_state = (th.get_rng_state(), np.random.get_state(), random.getstate())
        # The learner's statistics hold every report received, those queued for this actor included
        self._reports_for[slot.index].clear()
        ready = slot.launch(self._start_state(slot, None, random_state, self._statistics))
        self._wait_placed([slot], [ready])
        owed, slot.requests = list(slot.requests), collections.deque()
        for request in owed:
            slot.send_weights(request.policy_version, request.weights, [])

    def send_weights(self, policy_version: int, weights: Any) -> None:
        super().send_weights(policy_version, ray.put(weights))  # once for every actor

    def close(self) -> None:
        try:
            super().close()  # kills this group's actors, and no other
        finally:
            if self._started_ray:
                self._started_ray = False
                ray.shutdown()
