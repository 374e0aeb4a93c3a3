"""
The local rollout actor: a process forked from the learner, which collects rollouts with
the learner's own ``VecEnv`` and SB3's ``collect_rollouts`` on a CPU copy of the policy,
one torch thread, and sends them back over a :class:`~sb3_apo.async_rollouts.transport.Link`.
The process is a flat dispatch over the learner's commands (as SB3's ``SubprocVecEnv``
worker), with its state in :class:`RolloutCollector`.
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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_apo.async_rollouts.rollout import (
    BUFFER_ARRAYS,
    CLOSE_TIMEOUT,
    Rollout,
    RolloutActor,
    RolloutActorError,
    StepRecord,
    StepRecords,
)
from sb3_apo.async_rollouts.shards import (
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
from sb3_apo.async_rollouts.transport import Heartbeat, LearnerEnd, Link, PeerGone, PeerSilent
from sb3_apo.common.buffers import DistributionParamsMixin, anchored_buffer_class

if TYPE_CHECKING:
    from sb3_apo.common.on_policy import PPOFamilyAlgorithm

#: ``prctl``'s request for a signal when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

#: In an actor process, the objects it inherited but must never free (the learner's CUDA policy).
_KEPT_IN_ACTOR: list[Any] = []


class _StepRecorder(BaseCallback):
    """
    The actor's callback: records each step for replay, bumps the heartbeat the learner watches,
    and stops the rollout once the learner has closed its end of the link (or died).
    """

    def __init__(self, stop: threading.Event, heartbeat: Heartbeat | None):
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
        if self.heartbeat is not None:
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
    # mypy: space.shape is Optional; every action space the loop supports has one
    return actions.reshape((-1, *policy.action_space.shape)), zeros[:, None], zeros  # type: ignore[misc]


def _take_env_shard(model: PPOFamilyAlgorithm, indices: list[int], index: int) -> None:
    """In an actor process, keep the envs ``indices`` only, and draw actions from a stream of its own."""
    # mypy: model.env is Optional; an actor always holds its built VecEnv
    model.env = env_shard(model.env, indices)  # type: ignore[arg-type]
    model.n_envs = model.env.num_envs
    assert model._last_obs is not None and model._last_episode_starts is not None, "set by SB3's _setup_learn()"
    model._last_obs = select_envs(model._last_obs, indices)
    model._last_episode_starts = model._last_episode_starts[indices]
    own_random_stream(index)


def own_random_stream(index: int) -> None:
    """
    Give the actor of a shard a torch random stream of its own. Every actor starts from the learner's
    random state: without a seed of its own, the shards would draw the same exploration noise. The
    seed is drawn from that state, so a seeded run repeats.

    :param index: the actor's index
    """
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


def as_trained_actions(model: PPOFamilyAlgorithm, actions: th.Tensor) -> th.Tensor:
    """
    Actions as stored in the buffer (in the action space's dtype, e.g. int8 for ``MultiBinary``) as
    ``train()`` passes them to the distribution: float32, as SB3's buffer samples them, then in the
    distribution family's form (indices for ``Discrete``).
    """
    return model.distribution_math.distribution_actions(actions.float())


def evaluate_behaviour(
    model: PPOFamilyAlgorithm, observations: Any, actions: th.Tensor
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """The values, log-probabilities of the stored actions and distribution parameters of the actor's policy."""
    values, log_prob, _ = model.policy.evaluate_actions(observations, as_trained_actions(model, actions))
    # evaluate_actions() leaves the distribution it built in policy.action_dist
    return values, log_prob, model.distribution_math.params(model.policy.action_dist)


class RolloutCollector:
    """
    What an actor keeps between rollouts, whichever process it runs in (a forked one, or a Ray
    actor): the model (with a CPU policy, and its shard of the envs), the rollout buffer, and the
    ``VecNormalize`` statistics last reported.

    :param model: the actor's model, whose env is the actor's
    :param stop: once set, a rollout in progress stops after its current step
    :param heartbeat: bumped at every env step, for a learner that watches it
    :param reset_env: reset the env before the first rollout (else it goes on from ``model._last_obs``)
    :param shard: whether the actor steps a shard of the envs, and so reports the ``VecNormalize``
        moments it adds instead of its statistics
    """

    def __init__(
        self, model: PPOFamilyAlgorithm, stop: threading.Event, heartbeat: Heartbeat | None, reset_env: bool, shard: bool
    ):
        self.model, self.stop, self.heartbeat = model, stop, heartbeat
        env = model.env
        assert env is not None
        self.vec_normalize = model.get_vec_normalize_env()
        # A shard's statistics as last reported (so that its next report is what it added since)
        self.reported: Statistics | None = None
        if shard and self.vec_normalize is not None:
            self.reported = copy_statistics(vec_normalize_statistics(self.vec_normalize))
        if reset_env:  # the env continues from the learner's copy, which an earlier actor left behind
            # mypy: VecEnv.reset() is typed more widely than SB3's _last_obs, which stores its return
            model._last_obs = env.reset()  # type: ignore[assignment]
            model._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
        # With lag, the critic and the log-probabilities are left out of each step's forward pass
        # and evaluated for the whole rollout at once (docs/async.md); without lag the actor runs
        # SB3's loop unchanged, so that its rollouts are bit-for-bit the synchronous ones.
        self.deferred = model.max_policy_lag > 0
        if self.deferred:
            # the deferred actor only draws actions: forward is replaced on this process's own copy
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
                # mypy: vec_normalize is not None whenever self.reported is (both come from VecNormalize)
                add_moments(vec_normalize_statistics(self.vec_normalize), added)  # type: ignore[arg-type]
                add_moments(self.reported, added)
        # (arrays read from Ray's object store are read-only: torch wants writable ones)
        model.policy.load_state_dict(
            {name: th.as_tensor(value if value.flags.writeable else value.copy()) for name, value in weights.items()}
        )
        recorder = _StepRecorder(self.stop, self.heartbeat)
        recorder.init_callback(model)
        checked = model._rollout_callback(recorder, validate_args=False)
        started = time.perf_counter()
        if self.deferred:
            # mypy: model.env is Optional; an actor always holds its built VecEnv
            complete = model._run_sb3_rollout(model.env, checked, buffer, model.n_steps)  # type: ignore[arg-type]
        else:
            # mypy: model.env is Optional; an actor always holds its built VecEnv
            complete = model._collect_rollouts_locally(model.env, checked, buffer, model.n_steps)  # type: ignore[arg-type]
        if not complete:
            return None
        last_values = recorder.locals["values"]  # SB3's values of the last observation, from the critic
        if self.deferred:
            assert isinstance(buffer, DistributionParamsMixin)  # anchored_buffer_class() makes one
            buffer.fill_evaluations(functools.partial(evaluate_behaviour, model))
            assert model._last_episode_starts is not None, "set by SB3's _setup_learn()"
            buffer.compute_returns_and_advantage(last_values=last_values, dones=model._last_episode_starts)
        statistics = None if self.vec_normalize is None else vec_normalize_statistics(self.vec_normalize)
        if self.reported is not None:
            # mypy: statistics is not None whenever self.reported is (both come from VecNormalize)
            current = copy_statistics(statistics)  # type: ignore[arg-type]
            statistics, self.reported = moments_added(current, self.reported), current
        return Rollout(
            policy_version=policy_version,
            arrays={name: getattr(buffer, name) for name in BUFFER_ARRAYS},
            steps=StepRecords.stack(recorder.steps),
            last_obs=model._last_obs,
            # mypy: Optional until SB3's _setup_learn(), which runs before any rollout
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
    other actors reported, which come with the weights (:mod:`sb3_apo.async_rollouts.shards`).
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
        if cpu_policy is not None:
            # Never touch the learner's CUDA tensors in a forked process, not even to free
            # them: its policy stays referenced until the process exits (with os._exit).
            _KEPT_IN_ACTOR.append(model.policy)
            # mypy: model.policy is typed by the algorithm's policy class; this is a CPU copy of that class
            model.policy = cpu_policy  # type: ignore[assignment]
            model.device = th.device("cpu")
        if indices is not None:
            _take_env_shard(model, indices, index)
        actor = RolloutCollector(model, end.learner_gone, end.heartbeat, reset_env, shard=indices is not None)
        while True:
            waited = time.perf_counter()
            message = end.receive()
            if message is None:
                return  # the learner closed the link
            command, *arguments = message
            if command == "collect":
                policy_version, weights, reported_by_others = arguments
                rollout = actor.collect(policy_version, weights, reported_by_others, actor_idle_s=time.perf_counter() - waited)
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


def _ray_has_run_in_this_process() -> bool:
    """
    Whether Ray is initialised in this process, or has been by this package: Ray's native
    threads (gRPC, its core worker's) keep running after ``ray.shutdown()``, and a process forked
    while they run may hang or crash.
    """
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return True
    ray_actors = sys.modules.get("sb3_apo.async_rollouts.ray_actors")  # imported only where Ray is used
    return bool(getattr(ray_actors, "ray_has_run_here", False))


@dataclass
class ForkedRolloutActor(RolloutActor):
    """
    A local actor: a process forked from the learner, which collects rollouts with
    the learner's own ``VecEnv`` (that the learner does not step meanwhile). Messages
    cross a :class:`~sb3_apo.async_rollouts.transport.Link`, deadlock-free for any size.

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
    # RolloutActor declares name as an attribute; this actor computes it
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
        if _ray_has_run_in_this_process():
            warnings.warn(
                f"Forking the {self.name} from a process in which Ray has run is unsafe: Ray's threads outlive "
                "ray.shutdown(), and a forked actor may wait forever (training then stops after SILENCE_TIMEOUT_S) "
                "or crash. Use actor_backend='ray', or train with Ray in another process.",
                RuntimeWarning,
                stacklevel=2,
            )
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
        # mypy: _end is None only after close(), after which nothing reads it
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
        # mypy: _end is None only after close(), after which nothing reads it
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
    Several actors, each stepping its own shard of the envs, seen by the learner as one: their
    rollouts come back joined along the env axis, as one actor over all the envs would have sent
    it, and their ``VecNormalize`` statistics merged (:mod:`sb3_apo.async_rollouts.shards`).
    :meth:`forked` makes the local one (``n_actors > 1``); the Ray backend's
    (:class:`~sb3_apo.async_rollouts.ray_actors.RayActorGroup`) extends it.

    :param model: the algorithm
    :param actors: one actor per shard, in env order; each takes the ``VecNormalize`` moments the
        others reported with its weights (``send_weights(policy_version, weights, reported_by_others)``)
    """

    def __init__(self, model: PPOFamilyAlgorithm, actors: Sequence[Any]):
        self.actors = list(actors)
        vec_normalize = model.get_vec_normalize_env()
        # The learner's statistics: everything every actor has reported
        self._statistics = None if vec_normalize is None else copy_statistics(vec_normalize_statistics(vec_normalize))
        # For each actor, what the others reported since its last weights
        self._reports_for: list[list[Statistics]] = [[] for _ in self.actors]

    @classmethod
    def forked(cls, model: PPOFamilyAlgorithm, n_actors: int, reset_env: bool = False) -> ActorGroup:
        """
        Local actors, forked processes (:class:`ForkedRolloutActor`).

        :param model: the algorithm; its env must be a ``DummyVecEnv``, optionally in ``VecNormalize``
        :param n_actors: the number of actors
        :param reset_env: as for :class:`ForkedRolloutActor`
        """
        assert model.env is not None
        check_shardable(model.env, n_actors)
        return cls(
            model,
            [
                ForkedRolloutActor(model, reset_env=reset_env, index=index, env_indices=indices)
                for index, indices in enumerate(env_indices(model.env.num_envs, n_actors))
            ],
        )

    @property
    # RolloutActor declares name as an attribute; this group computes it
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

    def send_weights(self, policy_version: int, weights: Any) -> None:
        for actor, reports in zip(self.actors, self._reports_for):
            actor.send_weights(policy_version, weights, reports)
            reports.clear()

    def _receive_parts(self) -> list[Rollout]:
        """Each actor's part of the next rollout, in env order."""
        return [actor.receive_rollout() for actor in self.actors]

    def receive_rollout(self) -> Rollout:
        parts = self._receive_parts()
        assert len({part.policy_version for part in parts}) == 1
        if self._statistics is not None:
            for index, part in enumerate(parts):
                # mypy: a shard reports statistics whenever the group has VecNormalize (_statistics set)
                add_moments(self._statistics, part.vec_normalize_stats)  # type: ignore[arg-type]
                for other, reports in enumerate(self._reports_for):
                    if other != index:
                        # mypy: a shard reports statistics whenever the group has VecNormalize (_statistics set)
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
