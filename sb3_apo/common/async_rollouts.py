"""
Asynchronous rollouts: an actor process collects the next rollout while the learner trains.

The learner talks to its actor through the small :class:`RolloutActor` interface
(start, send weights, receive a rollout, close), so that actors of another kind
(e.g. Ray actors on other machines) can be added without touching the algorithms.
:class:`ForkedRolloutActor` is the local implementation: a process forked from the
learner, which therefore inherits the training ``VecEnv`` as it is (a
``SubprocVecEnv`` keeps its workers, ``VecNormalize`` its statistics, ``Monitor`` its
files) and runs SB3's own ``collect_rollouts`` on a CPU copy of the policy, with one
torch thread. Messages of any size cross pipes without a deadlock
(:mod:`sb3_apo.common.transport`): no shared memory segment is created.

Every weights message asks the actor for one rollout collected with those weights,
and the learner keeps ``max_policy_lag + 1`` requests in flight: the rollout it
trains on at update ``k`` was collected with the weights of update
``k - max_policy_lag`` (or of update 0 at the start), so the policy lag is bounded
by construction. ``docs/async.md`` gives the design and the maths.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_apo.common.buffers import anchored_buffer_class
from sb3_apo.common.env_shards import (
    Statistics,
    add_moments,
    check_shardable,
    copy_statistics,
    env_indices,
    env_shard,
    join_envs,
    moments_added,
    select_envs,
    vec_normalize_statistics,
)
from sb3_apo.common.transport import ActorEnd, Heartbeat, LearnerEnd, Link, PeerGone, PeerSilent

if TYPE_CHECKING:
    from sb3_apo.common.on_policy import PPOFamilyAlgorithm

#: The arrays of an SB3 rollout buffer (and of ours) that a rollout carries back.
BUFFER_ARRAYS = (
    "observations",
    "actions",
    "rewards",
    "returns",
    "episode_starts",
    "values",
    "log_probs",
    "advantages",
    "distribution_params",
)

#: Seconds an actor gets to stop on its own before it is terminated.
CLOSE_TIMEOUT = 10.0

#: ``prctl``'s request for a signal when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

#: In an actor process, the objects it inherited but must never free (the learner's CUDA policy).
_KEPT_IN_ACTOR: list[Any] = []


class RolloutActorError(RuntimeError):
    """A rollout actor crashed, was killed, or stopped answering; training cannot go on."""


@dataclass
class StepRecord:
    """What SB3's ``collect_rollouts`` exposes to callbacks at one step, for replay in the learner."""

    new_obs: Any
    rewards: np.ndarray
    dones: np.ndarray
    infos: list[dict[str, Any]]


def pack_infos(
    infos: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """
    Take the numpy scalars out of ``infos``, as one array per key and dtype with the positions
    of the dicts they came from. Pickled one by one, the scalars (e.g. Hopper's ``x_position``,
    an ``np.float64``) cost most of a rollout's transfer; as arrays, almost nothing.

    :param infos: the info dicts of a rollout, flattened (left unchanged)
    :return: copies of the dicts with ``None`` in the scalars' places (so that each keeps its
        keys' order), and for each ``(key, dtype)`` the dicts' indices and the values; see
        :func:`unpack_infos`
    """
    columns: dict[tuple[str, str], tuple[list[int], list[Any]]] = {}
    packed = []
    for index, info in enumerate(infos):
        info = dict(info)
        for key, value in info.items():
            if isinstance(value, np.generic):
                positions, values = columns.setdefault((key, value.dtype.str), ([], []))
                positions.append(index)
                values.append(value)
                info[key] = None
        packed.append(info)
    return packed, {
        (key, dtype): (np.array(positions, dtype=np.int64), np.array(values, dtype=dtype))
        for (key, dtype), (positions, values) in columns.items()
    }


def unpack_infos(infos: list[dict[str, Any]], columns: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    """Put back, in place, the numpy scalars that :func:`pack_infos` took out (same dtypes, same bits)."""
    for (key, _), (positions, values) in columns.items():
        for position, value in zip(positions.tolist(), values):
            infos[position][key] = value


@dataclass
class StepRecords:
    """
    The :class:`StepRecord` of every step of a rollout, stacked: ``new_obs``, ``rewards`` and
    ``dones`` as ``(n_steps, n_envs, ...)`` arrays (one dict of them for a ``Dict`` space), which
    cross a pipe far faster than a few hundred small arrays; ``infos`` per step, per env.
    """

    new_obs: Any
    rewards: np.ndarray
    dones: np.ndarray
    infos: list[list[dict[str, Any]]]

    @classmethod
    def stack(cls, steps: Sequence[StepRecord]) -> StepRecords:
        """Stack the records of consecutive steps."""
        new_obs = [step.new_obs for step in steps]
        return cls(
            new_obs={key: np.stack([obs[key] for obs in new_obs]) for key in new_obs[0]}
            if isinstance(new_obs[0], dict)
            else np.stack(new_obs),
            rewards=np.stack([step.rewards for step in steps]),
            dones=np.stack([step.dones for step in steps]),
            infos=[step.infos for step in steps],
        )

    def __getstate__(self) -> dict[str, Any]:
        flat, scalars = pack_infos([info for infos in self.infos for info in infos])
        return {**vars(self), "infos": [len(infos) for infos in self.infos], "_flat": flat, "_scalars": scalars}

    def __setstate__(self, state: dict[str, Any]) -> None:
        flat, scalars, lengths = state.pop("_flat"), state.pop("_scalars"), state.pop("infos")
        unpack_infos(flat, scalars)
        starts = np.cumsum([0, *lengths]).tolist()
        vars(self).update(state, infos=[flat[start:end] for start, end in zip(starts[:-1], starts[1:])])

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, step: int) -> StepRecord:
        """The record of one step (views of the stacked arrays)."""
        new_obs = (
            {key: value[step] for key, value in self.new_obs.items()} if isinstance(self.new_obs, dict) else self.new_obs[step]
        )
        return StepRecord(new_obs, self.rewards[step], self.dones[step], self.infos[step])


@dataclass
class Rollout:
    """
    One complete rollout, as an actor sends it to the learner.

    :param policy_version: the version of the weights that collected it (``pi_b``)
    :param arrays: the filled rollout buffer's arrays (:data:`BUFFER_ARRAYS`), returns
        and advantages included
    :param steps: what the callbacks saw at each step
    :param last_obs: the observation after the last step
    :param last_episode_starts: the ``dones`` of the last step
    :param last_values: the values of ``last_obs``, used for the returns
    :param vec_normalize_stats: ``(obs_rms, ret_rms)`` of the actor's ``VecNormalize``, or ``None``;
        from an actor of a shard of the envs, the moments it added in this rollout
        (:func:`~sb3_apo.common.env_shards.moments_added`)
    :param actor_idle_s: seconds the actor waited for weights before this rollout
    :param collect_s: seconds the actor spent collecting it
    """

    policy_version: int
    arrays: dict[str, Any]
    steps: StepRecords
    last_obs: Any
    last_episode_starts: np.ndarray
    last_values: np.ndarray
    vec_normalize_stats: Statistics | None
    actor_idle_s: float
    collect_s: float


class RolloutActor(ABC):
    """
    What the learner needs of an actor. Every :meth:`send_weights` call requests one
    rollout collected with those weights; :meth:`receive_rollout` returns them in order.
    """

    #: A name for messages (e.g. ``"rollout actor 0 (pid 1234)"``).
    name: str

    @abstractmethod
    def start(self) -> None:
        """Start the actor (it waits for weights before it collects anything)."""

    @abstractmethod
    def send_weights(self, policy_version: int, weights: dict[str, np.ndarray]) -> None:
        """
        Request one rollout collected with these policy weights.

        :param policy_version: the number of updates the weights have seen
        :param weights: the policy's ``state_dict`` as numpy arrays
        """

    @abstractmethod
    def receive_rollout(self) -> Rollout:
        """The next requested rollout; raises :class:`RolloutActorError` if the actor failed."""

    @abstractmethod
    def close(self) -> None:
        """Stop the actor and release everything it holds; safe to call more than once."""


def vtrace(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    dones: np.ndarray,
    ratios: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """
    V-trace value targets (Espeholt et al. 2018, with ``rho_bar = c_bar = 1``) and the
    matching advantages, for a rollout of ``pi_b`` evaluated for ``pi_prox``. With
    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` (0 past an episode's end) and
    ``ratio_t = pi_prox(a_t|s_t) / pi_b(a_t|s_t)``::

        vs_t       = min(1, ratio_t) * delta_t + gamma * lambda * min(1, ratio_t) * vs_{t+1}
        returns_t  = V(s_t) + vs_t                         (the V-trace target)
        advantage_t = delta_t + gamma * lambda * vs_{t+1}

    The advantage carries no weight of its own step: the loss weights it by ``w``.
    With every ratio 1 both are GAE's (SB3's ``compute_returns_and_advantage``).

    :param rewards: ``(n_steps, n_envs)`` rewards (with SB3's timeout bootstraps)
    :param values: ``(n_steps, n_envs)`` ``V(s_t)``
    :param episode_starts: ``(n_steps, n_envs)`` whether ``s_t`` starts an episode
    :param last_values: ``(n_envs,)`` values of the observations after the last step
    :param dones: ``(n_envs,)`` whether the last step ended an episode
    :param ratios: ``(n_steps, n_envs)`` ``pi_prox / pi_b`` of the executed actions
    :param gamma: the discount
    :param gae_lambda: lambda
    :return: the advantages and the value targets, ``(n_steps, n_envs)`` each
    """
    clipped = np.minimum(ratios, 1.0)
    advantages, returns = np.zeros_like(values), np.zeros_like(values)
    next_vs = np.zeros_like(last_values)
    for step in reversed(range(len(values))):
        if step == len(values) - 1:
            next_non_terminal, next_values = 1.0 - dones.astype(np.float32), last_values
        else:
            next_non_terminal, next_values = 1.0 - episode_starts[step + 1], values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        trace = gamma * gae_lambda * next_non_terminal * next_vs
        advantages[step] = delta + trace
        next_vs = clipped[step] * (delta + trace)
        returns[step] = values[step] + next_vs
    return advantages, returns


def policy_weights(policy: th.nn.Module) -> dict[str, np.ndarray]:
    """A policy's ``state_dict`` as numpy arrays (plain pickles: no shared memory)."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in policy.state_dict().items()}


class _StepRecorder(BaseCallback):
    """
    The actor's callback: records each step for replay, bumps the heartbeat the learner watches,
    and stops the rollout once the learner has closed its end of the link (or died).
    """

    def __init__(self, stop: threading.Event, heartbeat: Heartbeat):
        super().__init__()
        self.stop, self.heartbeat = stop, heartbeat
        self.steps: list[StepRecord] = []

    def _on_step(self) -> bool:
        self.steps.append(
            StepRecord(
                new_obs=self.locals["new_obs"],
                rewards=np.array(self.locals["rewards"], copy=True),  # SB3 adds timeout bootstraps to it afterwards
                dones=self.locals["dones"],
                infos=self.locals["infos"],
            )
        )
        self.heartbeat.beat()
        return not self.stop.is_set()


def _actions_only(
    policy: ActorCriticPolicy, obs: th.Tensor, deterministic: bool = False
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    ``ActorCriticPolicy.forward`` for an actor that defers the rest: the sampled actions (the same
    draws as ``forward``'s), and zeros for the values and log-probabilities, which it fills for the
    whole rollout in one pass afterwards (:meth:`DistributionParamsMixin.fill_evaluations`).
    """
    actions = policy.get_distribution(obs).get_actions(deterministic=deterministic)
    zeros = th.zeros(len(actions), device=actions.device)
    return actions.reshape((-1, *policy.action_space.shape)), zeros[:, None], zeros  # type: ignore[misc]


def _take_env_shard(model: PPOFamilyAlgorithm, indices: list[int], index: int) -> None:
    """In an actor process, keep the envs ``indices`` only, and draw actions from a stream of its own."""
    model.env = env_shard(model.env, indices)  # type: ignore[arg-type]
    model.n_envs = model.env.num_envs
    model._last_obs = select_envs(model._last_obs, indices)
    model._last_episode_starts = model._last_episode_starts[indices]
    # Every actor inherits the learner's random state: without a seed of its own, the shards would
    # draw the same exploration noise. The seed is drawn from that state, so a seeded run repeats.
    th.manual_seed(int(th.randint(0, 2**62, (1,)).item()) + index)


def _die_with(learner_pid: int) -> None:
    """
    Make the calling actor process end when its learner does, even while an env hangs in ``step()``:
    on Linux the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``); elsewhere the actor's receiving
    thread ends it once the learner's end of the link closed (:func:`_exit_soon`).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # whatever handler the learner installed
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != learner_pid:  # the learner died before the request above
        os._exit(1)


def _exit_soon() -> None:
    """Called once the learner closed its end: leave if the main thread has not left by itself in time."""
    time.sleep(CLOSE_TIMEOUT)
    os._exit(1)


class _Actor:
    """
    What an actor process keeps between rollouts: the model (with a CPU policy, and its shard of
    the envs), the rollout buffer, and the ``VecNormalize`` statistics last reported.
    """

    def __init__(
        self,
        model: PPOFamilyAlgorithm,
        cpu_policy: th.nn.Module | None,
        end: ActorEnd,
        reset_env: bool,
        indices: list[int] | None,
        index: int,
    ):
        if cpu_policy is not None:
            # Never touch the learner's CUDA tensors in a forked process, not even to free
            # them: its policy stays referenced until the process exits (with os._exit).
            _KEPT_IN_ACTOR.append(model.policy)
            model.policy = cpu_policy  # type: ignore[assignment]
            model.device = th.device("cpu")
        if indices is not None:
            _take_env_shard(model, indices, index)
        self.model, self.end = model, end
        env = model.env
        assert env is not None
        self.vec_normalize = model.get_vec_normalize_env()
        # A shard's statistics as last reported (so that its next report is what it added since)
        self.reported: Statistics | None = None
        if indices is not None and self.vec_normalize is not None:
            self.reported = copy_statistics(vec_normalize_statistics(self.vec_normalize))
        if reset_env:  # the env continues from the learner's copy, which an earlier actor left behind
            model._last_obs = env.reset()  # type: ignore[assignment]
            model._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
        # With lag, the critic and the log-probabilities are left out of each step's forward pass
        # and evaluated for the whole rollout at once (docs/async.md); without lag the actor runs
        # SB3's loop unchanged, so that its rollouts are bit-for-bit the synchronous ones.
        self.deferred = model.max_policy_lag > 0
        if self.deferred:
            model.policy.forward = functools.partial(_actions_only, model.policy)  # type: ignore[method-assign]
        self.buffer = anchored_buffer_class(model.observation_space)(
            model.n_steps,
            model.observation_space,
            model.action_space,
            device="cpu",
            gamma=model.gamma,
            gae_lambda=model.gae_lambda,
            n_envs=env.num_envs,
        )

    def collect(
        self, policy_version: int, weights: dict[str, np.ndarray], reported_by_others: list[Statistics], actor_idle_s: float
    ) -> Rollout | None:
        """One rollout with these weights, or ``None`` if the learner closed the link meanwhile."""
        model, buffer = self.model, self.buffer
        if self.reported is not None:
            for added in reported_by_others:
                add_moments(vec_normalize_statistics(self.vec_normalize), added)  # type: ignore[arg-type]
                add_moments(self.reported, added)
        model.policy.load_state_dict({name: th.as_tensor(value) for name, value in weights.items()})
        recorder = _StepRecorder(self.end.learner_gone, self.end.heartbeat)
        recorder.init_callback(model)
        checked = model._rollout_callback(recorder, validate_args=False)
        started = time.perf_counter()
        if self.deferred:
            complete = model._run_sb3_rollout(model.env, checked, buffer, model.n_steps)  # type: ignore[arg-type]
        else:
            complete = model._collect_rollouts_locally(model.env, checked, buffer, model.n_steps)  # type: ignore[arg-type]
        if not complete:
            return None
        last_values = recorder.locals["values"]  # SB3's values of the last observation, from the critic
        if self.deferred:
            buffer.fill_evaluations(model._evaluate_behaviour)
            buffer.compute_returns_and_advantage(last_values=last_values, dones=model._last_episode_starts)
        statistics = None if self.vec_normalize is None else vec_normalize_statistics(self.vec_normalize)
        if self.reported is not None:
            current = copy_statistics(statistics)  # type: ignore[arg-type]
            statistics, self.reported = moments_added(current, self.reported), current
        return Rollout(
            policy_version=policy_version,
            arrays={name: getattr(buffer, name) for name in BUFFER_ARRAYS},
            steps=StepRecords.stack(recorder.steps),
            last_obs=model._last_obs,
            last_episode_starts=model._last_episode_starts,  # type: ignore[arg-type]
            last_values=last_values.cpu().numpy(),
            vec_normalize_stats=statistics,
            actor_idle_s=actor_idle_s,
            collect_s=time.perf_counter() - started,
        )


def _actor_main(
    model: PPOFamilyAlgorithm,
    cpu_policy: th.nn.Module | None,
    link: Link,
    learner_pid: int,
    reset_env: bool,
    indices: list[int] | None,
    index: int,
) -> None:
    """
    The actor process, a flat dispatch over the learner's commands (as SB3's ``SubprocVecEnv``
    worker): ``("collect", policy_version, weights, reported_by_others)`` asks for one rollout,
    sent back as ``("rollout", Rollout)``; the end of the link ends the process. Any error goes
    back as ``("error", traceback)`` before the process exits with code 1. An actor of a shard of
    the envs (``indices``) also reports the ``VecNormalize`` moments it added, and adds those the
    other actors reported, which come with the weights (:mod:`sb3_apo.common.env_shards`).
    """
    end = link.actor_end()
    _die_with(learner_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    th.set_num_threads(1)
    # This process only collects, on observations checked at every step: torch's distribution argument
    # checks are off in it, as in the learner's rollouts and updates (sb3_apo/common/_torch_compat.py).
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        end.start(on_learner_gone=_exit_soon)
        actor = _Actor(model, cpu_policy, end, reset_env, indices, index)
        while True:
            waited = time.perf_counter()
            message = end.receive()
            if message is None:
                return  # the learner closed the link
            command, *arguments = message
            if command == "collect":
                rollout = actor.collect(*arguments, actor_idle_s=time.perf_counter() - waited)
                if rollout is None:
                    return
                end.send(("rollout", rollout))
            else:
                raise ValueError(f"Unknown command {command!r} for a rollout actor.")
    except PeerGone:
        return  # the learner is gone: nothing to report to
    except BaseException:
        with contextlib.suppress(BaseException):
            end.send(("error", traceback.format_exc()))
        os._exit(1)


@dataclass
class ForkedRolloutActor(RolloutActor):
    """
    A local actor: a process forked from the learner, which collects rollouts with
    the learner's own ``VecEnv`` (that the learner does not step meanwhile). Messages
    cross a :class:`~sb3_apo.common.transport.Link`, deadlock-free for any size.

    :param model: the algorithm; the forked process uses its env, ``n_steps`` and policy class
    :param reset_env: reset the env before the first rollout (when an earlier actor
        moved it on, since the learner's copy of a ``DummyVecEnv`` is then stale)
    :param index: a number for the actor's name
    :param env_indices: the envs this actor steps, when the envs are split across actors
        (:class:`ActorGroup`); ``None``: all of them
    """

    model: PPOFamilyAlgorithm
    reset_env: bool = False
    index: int = 0
    env_indices: list[int] | None = None
    process: Any = field(default=None, init=False)
    _end: LearnerEnd | None = field(default=None, init=False)
    _pending: int = field(default=0, init=False)
    _silent: bool = field(default=False, init=False)
    #: The process's exit code once closed: 0 when it left by itself, negative when a signal ended it.
    exitcode: int | None = field(default=None, init=False)

    @property
    def name(self) -> str:  # type: ignore[override]
        pid = None if self.process is None else self.process.pid
        return f"rollout actor {self.index} (pid {pid})"

    @property
    def pid(self) -> int | None:
        """The actor process's id, once started."""
        return None if self.process is None else self.process.pid

    @property
    def pids(self) -> list[int | None]:
        """As :attr:`ActorGroup.pids`: the actor's process id, in a list."""
        return [self.pid]

    def start(self) -> None:
        context = mp.get_context("fork")
        cpu_policy = None
        if self.model.device.type != "cpu":
            cpu_policy = copy.deepcopy(self.model.policy).to("cpu")
        link = Link()
        self.process = context.Process(
            target=_actor_main,
            args=(self.model, cpu_policy, link, os.getpid(), self.reset_env, self.env_indices, self.index),
            name=f"sb3-apo-rollout-actor-{self.index}",
            daemon=True,
        )
        try:
            self.process.start()
        except BaseException:
            link.close_all()
            self.process = None
            raise
        self._end = link.learner_end(self.process.sentinel)

    def send_weights(
        self, policy_version: int, weights: dict[str, np.ndarray], reported_by_others: Sequence[Statistics] = ()
    ) -> None:
        """
        :param reported_by_others: for an actor of a shard, the ``VecNormalize`` moments the
            other actors added since its last weights
        """
        assert self._end is not None, "start() the actor first"
        try:
            self._end.send(("collect", policy_version, weights, list(reported_by_others)))
        except (PeerGone, PeerSilent) as error:
            raise self._failure(error) from error
        self._pending += 1

    def receive_rollout(self) -> Rollout:
        assert self._end is not None and self._pending > 0, "no rollout was requested"
        try:
            kind, content = self._end.receive()
        except (PeerGone, PeerSilent) as error:
            raise self._failure(error) from error
        if kind == "error":
            raise self._crash(content)
        self._pending -= 1
        return content

    def _crash(self, actor_traceback: str) -> RolloutActorError:
        self.process.join(CLOSE_TIMEOUT)
        return RolloutActorError(f"The {self.name} crashed while collecting a rollout:\n{actor_traceback}")

    def _failure(self, error: PeerGone | PeerSilent) -> RolloutActorError:
        """The error to raise when the link failed: the actor's own error where it sent one before it ended."""
        if isinstance(error, PeerSilent):
            self._silent = True
            return RolloutActorError(f"The {self.name} stopped answering: {error}; training stopped.")
        self.process.join(CLOSE_TIMEOUT)
        for kind, content in self._end.leftovers():  # type: ignore[union-attr]
            if kind == "error":
                return self._crash(content)
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
        elif code is not None:
            how = f"exited with code {code}"
        else:
            how = "closed its end of the link"
        return RolloutActorError(f"The {self.name} {how}; training stopped.")

    def close(self) -> None:
        if self.process is None:
            return
        # Closing the link ends each of the actor's waits promptly: its receiving thread reads the
        # end of the pipe (which stops a rollout in progress after its current step, and a wait
        # for weights), and a send that the learner will not read fails (broken pipe). Nothing
        # here waits on a lock that the actor may hold: it may have been killed.
        self._end.close()  # type: ignore[union-attr]
        self._end = None
        self.process.join(0 if self._silent else CLOSE_TIMEOUT)
        if self.process.is_alive():
            self.process.terminate()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
            self.process.join(CLOSE_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.exitcode = self.process.exitcode
        self.process.close()
        self.process = None


class ActorGroup(RolloutActor):
    """
    Several local actors, each stepping its own shard of the envs (``n_actors > 1``), seen by the
    learner as one: their rollouts come back joined along the env axis, as one actor over all
    the envs would have sent it, and their ``VecNormalize`` statistics merged
    (:mod:`sb3_apo.common.env_shards`).

    :param model: the algorithm; its env must be a ``DummyVecEnv``, optionally in ``VecNormalize``
    :param n_actors: the number of actors
    :param reset_env: as for :class:`ForkedRolloutActor`
    """

    def __init__(self, model: PPOFamilyAlgorithm, n_actors: int, reset_env: bool = False):
        assert model.env is not None
        check_shardable(model.env, n_actors)
        self.actors = [
            ForkedRolloutActor(model, reset_env=reset_env, index=index, env_indices=indices)
            for index, indices in enumerate(env_indices(model.env.num_envs, n_actors))
        ]
        vec_normalize = model.get_vec_normalize_env()
        # The learner's statistics: everything every actor has reported
        self._statistics = None if vec_normalize is None else copy_statistics(vec_normalize_statistics(vec_normalize))
        # For each actor, what the others reported since its last weights
        self._reports_for: list[list[Statistics]] = [[] for _ in self.actors]

    @property
    def name(self) -> str:  # type: ignore[override]
        return ", ".join(actor.name for actor in self.actors)

    @property
    def pids(self) -> list[int | None]:
        """The actor processes' ids, once started."""
        return [actor.pid for actor in self.actors]

    def start(self) -> None:
        try:
            for actor in self.actors:
                actor.start()
        except BaseException:
            self.close()
            raise

    def send_weights(self, policy_version: int, weights: dict[str, np.ndarray]) -> None:
        for actor, reports in zip(self.actors, self._reports_for):
            actor.send_weights(policy_version, weights, reports)
            reports.clear()

    def receive_rollout(self) -> Rollout:
        parts = [actor.receive_rollout() for actor in self.actors]
        assert len({part.policy_version for part in parts}) == 1
        if self._statistics is not None:
            for index, part in enumerate(parts):
                add_moments(self._statistics, part.vec_normalize_stats)  # type: ignore[arg-type]
                for other, reports in enumerate(self._reports_for):
                    if other != index:
                        reports.append(part.vec_normalize_stats)  # type: ignore[arg-type]
        return Rollout(
            policy_version=parts[0].policy_version,
            arrays={name: join_envs([part.arrays[name] for part in parts], axis=1) for name in BUFFER_ARRAYS},
            steps=StepRecords(
                new_obs=join_envs([part.steps.new_obs for part in parts], axis=1),
                rewards=np.concatenate([part.steps.rewards for part in parts], axis=1),
                dones=np.concatenate([part.steps.dones for part in parts], axis=1),
                infos=[[info for infos in step for info in infos] for step in zip(*(part.steps.infos for part in parts))],
            ),
            last_obs=join_envs([part.last_obs for part in parts]),
            last_episode_starts=np.concatenate([part.last_episode_starts for part in parts]),
            last_values=np.concatenate([part.last_values for part in parts]),
            vec_normalize_stats=None if self._statistics is None else copy_statistics(self._statistics),
            actor_idle_s=max(part.actor_idle_s for part in parts),
            collect_s=max(part.collect_s for part in parts),
        )

    def close(self) -> None:
        with contextlib.ExitStack() as closing:  # every actor is closed, even if closing one raises
            for actor in self.actors:
                closing.callback(actor.close)


class AsyncLearner:
    """
    The learner's side of asynchronous rollouts, mixed into
    :class:`~sb3_apo.common.on_policy.PPOFamilyAlgorithm`: its ``collect_rollouts()``
    calls :meth:`_receive_rollout` when ``async_rollouts`` is set, and ``learn()``
    closes the actor when it returns.
    """

    def _receive_rollout(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer) -> bool:
        """
        The asynchronous ``collect_rollouts``: hand the actor the current weights (for a
        later rollout), receive the rollout it collected meanwhile into ``rollout_buffer``,
        and replay its steps to the callbacks as SB3's loop would have.
        """
        if self._rollout_actor is None:
            if self.n_actors > 1:
                self._rollout_actor = ActorGroup(self, self.n_actors, reset_env=self._rollout_env_stale)
            else:
                self._rollout_actor = ForkedRolloutActor(self, reset_env=self._rollout_env_stale)
            self._rollout_env_stale = True
            self._rollout_actor.start()
            self._policy_version = 0
            for _ in range(self.max_policy_lag):
                self._rollout_actor.send_weights(self._policy_version, policy_weights(self.policy))
        else:
            self._policy_version += 1  # one train() per collect_rollouts() since the last call
        self._rollout_actor.send_weights(self._policy_version, policy_weights(self.policy))
        waited = time.perf_counter()
        rollout = self._rollout_actor.receive_rollout()
        learner_idle_s = time.perf_counter() - waited

        vec_normalize = self.get_vec_normalize_env()
        if vec_normalize is not None and rollout.vec_normalize_stats is not None:
            # The actor's statistics, which normalised the rollout: what the callbacks sync and save
            vec_normalize.obs_rms, vec_normalize.ret_rms = rollout.vec_normalize_stats
        callback.on_rollout_start()
        for n_steps in range(len(rollout.steps)):
            step = rollout.steps[n_steps]
            self.num_timesteps += env.num_envs
            callback.update_locals({"n_steps": n_steps, "env": env, **vars(step)})
            if not callback.on_step():
                return False
            self._update_info_buffer(step.infos, step.dones)
        self._fill_buffer(rollout_buffer, rollout)
        self._last_obs, self._last_episode_starts = rollout.last_obs, rollout.last_episode_starts

        policy_lag = self._policy_version - rollout.policy_version
        assert 0 <= policy_lag <= self.max_policy_lag
        truncated_fraction = 0.0  # with no lag pi_prox is pi_b, and w = 1 exactly
        if policy_lag > 0 and self.correct_policy_lag:
            behaviour_log_probs = rollout_buffer.log_probs.copy()
            truncated_fraction = rollout_buffer.store_proximal_policy(  # type: ignore[attr-defined]
                self._evaluate_proximal, self.importance_weight_max
            )
            # The learner's values become the reference of value clipping, as pi_prox is the policy's:
            # against the actor's, one update old, a value that moved by clip_range_vf in the last
            # update could not move on in this one (docs/async.md, "Value targets").
            rollout_buffer._fill_from_observations(rollout_buffer.values[..., None], self.policy.predict_values)  # type: ignore[attr-defined]
            if self.value_targets == "vtrace":
                self._store_vtrace_targets(rollout_buffer, np.exp(rollout_buffer.log_probs - behaviour_log_probs), rollout)
        self.logger.record("async/policy_lag", policy_lag)
        self.logger.record("async/is_weight_mean", float(rollout_buffer.importance_weights.mean()))  # type: ignore[attr-defined]
        self.logger.record("async/is_truncated_fraction", truncated_fraction)
        self.logger.record("async/learner_idle_s", learner_idle_s)
        self.logger.record("async/actor_idle_s", rollout.actor_idle_s)
        self.logger.record("async/actor_collect_s", rollout.collect_s)

        callback.update_locals({"new_obs": rollout.last_obs, "dones": rollout.last_episode_starts})
        callback.on_rollout_end()
        return True

    @staticmethod
    def _fill_buffer(rollout_buffer: RolloutBuffer, rollout: Rollout) -> None:
        rollout_buffer.reset()
        for name in BUFFER_ARRAYS:
            target, source = getattr(rollout_buffer, name), rollout.arrays[name]
            if isinstance(target, dict):
                for key in target:
                    target[key][...] = source[key]
            else:
                target[...] = source
        rollout_buffer.pos, rollout_buffer.full = rollout_buffer.buffer_size, True

    def _store_vtrace_targets(self, rollout_buffer: RolloutBuffer, ratios: np.ndarray, rollout: Rollout) -> None:
        """Replace the actor's returns and advantages by V-trace's, from the learner's values (already in the buffer)."""
        with th.no_grad():
            last_values = self.policy.predict_values(obs_as_tensor(rollout.last_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.advantages, rollout_buffer.returns = vtrace(
            rollout_buffer.rewards,
            rollout_buffer.values,
            rollout_buffer.episode_starts,
            last_values.cpu().numpy().flatten(),
            rollout.last_episode_starts,
            ratios,
            self.gamma,
            self.gae_lambda,
        )

    def _evaluate_behaviour(self, observations: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """The values, log-probabilities of the stored actions and distribution parameters of the actor's policy."""
        values, log_prob, _ = self.policy.evaluate_actions(observations, self._as_trained_actions(actions))
        # evaluate_actions() leaves the distribution it built in policy.action_dist
        return values, log_prob, self.distribution_math.params(self.policy.action_dist)

    def _evaluate_proximal(self, observations: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``pi_prox``'s distribution parameters, and log-probabilities of the stored actions."""
        distribution = self.policy.get_distribution(observations)
        return self.distribution_math.params(distribution), distribution.log_prob(self._as_trained_actions(actions))

    def _as_trained_actions(self, actions: th.Tensor) -> th.Tensor:
        """
        Actions as stored in the buffer (in the action space's dtype, e.g. int8 for ``MultiBinary``) as
        ``train()`` passes them to the distribution: float32, as SB3's buffer samples them, and indices
        for ``Discrete``.
        """
        if isinstance(self.action_space, spaces.Discrete):
            return actions.long().flatten()
        return actions.float()

    def _close_rollout_actor(self) -> None:
        if self._rollout_actor is not None:
            actor, self._rollout_actor = self._rollout_actor, None
            actor.close()
