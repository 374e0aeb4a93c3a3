"""
Faults of asynchronous rollouts: an actor that crashes or is killed stops training
with an error that names it; Ctrl-C and a killed learner stop everything; no process
and no shared-memory segment is left behind.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_apo import APO
from sb3_apo.async_rollouts import ForkedRolloutActor, RolloutActorError
from sb3_apo.async_rollouts.actor import _StepRecorder

pytestmark = pytest.mark.slow

SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}

#: Training that never ends by itself; it prints the actors' pids after the 32nd step.
TRAINING_SCRIPT = textwrap.dedent(
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import {vec_env}

    from sb3_apo import APO


    class AnnouncesTheActor(BaseCallback):
        def _on_rollout_end(self):
            if self.n_calls == 32:
                print(*self.model._rollout_actor.pids, flush=True)

        def _on_step(self):
            return True


    if __name__ == "__main__":
        env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls={vec_env})
        model = APO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, async_rollouts=True, n_actors={n_actors})
        model.learn(10**9, callback=AnnouncesTheActor())
    """
)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def session_processes(session: int) -> list[int]:
    """The live processes of a session (a process group leader and everything it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


#: Prefixes of the /dev/shm entries Python and torch create: multiprocessing's shared memory
#: and semaphores, torch's shared tensors (other programs' entries, e.g. a database's, are not ours).
SHM_PREFIXES = ("psm_", "sem.", "mp-", "torch_", "wnsm_")


def shared_memory_entries() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(SHM_PREFIXES)}


@pytest.fixture
def shared_memory_unchanged():
    before = shared_memory_entries()
    yield
    assert shared_memory_entries() - before == set()


class FailingCartPole(gym.Wrapper):
    """CartPole whose ``step`` raises, or returns a NaN observation (``how="NaN"``), after some steps."""

    def __init__(self, fail_after: int, how: str = "raises"):
        super().__init__(gym.make("CartPole-v1"))
        self.steps, self.fail_after, self.how = 0, fail_after, how

    def step(self, action):
        self.steps += 1
        obs, *rest = super().step(action)
        if self.steps > self.fail_after:
            if self.how == "raises":
                raise RuntimeError("the simulator broke down")
            obs = np.full_like(obs, np.nan)
        return obs, *rest


def breaks_in_a_subprocess():
    """A SubprocVecEnv worker's env that raises in the second rollout: the worker dies, the actor reads EOF."""
    return FailingCartPole(SMALL["n_steps"])


class WaitsForTheLastActorToEnd(BaseCallback):
    """After the first rollout, waits until the last actor has ended, so that its next weights meet a closed pipe."""

    def _on_rollout_end(self):
        if self.n_calls == SMALL["n_steps"]:
            actor = self.model._rollout_actor
            getattr(actor, "actors", [actor])[-1].process.join(60)

    def _on_step(self):
        return True


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("shared_memory_unchanged")
@pytest.mark.parametrize(
    ("how", "vec_env", "n_actors", "expected"),
    [
        ("raises", "DummyVecEnv", 1, "RuntimeError: the simulator broke down"),
        ("raises", "DummyVecEnv", 2, "RuntimeError: the simulator broke down"),
        ("NaN", "DummyVecEnv", 1, "NonFiniteObservationError"),
        ("NaN", "DummyVecEnv", 2, "NonFiniteObservationError"),
        ("raises", "SubprocVecEnv", 1, "EOFError"),
    ],
)
def test_the_cause_of_an_actors_failure_reaches_the_learner(how, vec_env, n_actors, expected):
    # The failing env is the last one, which the last actor steps; by the time the learner sends the
    # next weights that actor has ended, so the send meets a closed pipe: its error must still come through.
    if vec_env == "SubprocVecEnv":
        env = SubprocVecEnv([lambda: gym.make("CartPole-v1"), breaks_in_a_subprocess])
    else:
        env = DummyVecEnv([lambda: gym.make("CartPole-v1"), lambda: FailingCartPole(SMALL["n_steps"], how)])
    model = APO("MlpPolicy", env, async_rollouts=True, n_actors=n_actors, **SMALL)
    with pytest.raises(RolloutActorError) as error:
        model.learn(10_000, callback=WaitsForTheLastActorToEnd())
    message = str(error.value)
    assert f"rollout actor {n_actors - 1} (pid" in message and "crashed while collecting a rollout" in message
    assert "Traceback (most recent call last)" in message and expected in message
    assert model._rollout_actor is None


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("shared_memory_unchanged")
@pytest.mark.parametrize("n_actors", [1, 2])
def test_actors_die_with_their_learner_while_an_env_hangs(tmp_path, n_actors):
    # The actors hang in env.step() from their second rollout: they never reach a point where they
    # could notice that the learner is gone, yet must not outlive it.
    script = tmp_path / "train.py"
    script.write_text(HANGING_SCRIPT.format(n_actors=n_actors))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        actor_pids = [int(pid) for pid in process.stdout.readline().split()]
        assert len(actor_pids) == n_actors and all(alive(pid) for pid in actor_pids)
        process.terminate()  # SIGTERM: Python's default ends the learner at once, with no cleanup
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert wait_until(lambda: not any(alive(pid) for pid in actor_pids))
    assert wait_until(lambda: not session_processes(process.pid)), session_processes(process.pid)


#: Training whose actors hang in env.step() once the learner printed their pids (after the first rollout).
HANGING_SCRIPT = textwrap.dedent(
    """
    import time

    import gymnasium as gym
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_apo import APO


    class HangsFromTheSecondRollout(gym.Wrapper):
        def __init__(self):
            super().__init__(gym.make("CartPole-v1"))
            self.steps = 0

        def step(self, action):
            self.steps += 1
            if self.steps > 32:
                time.sleep(3600)
            return super().step(action)


    class AnnouncesTheActors(BaseCallback):
        def _on_rollout_end(self):
            print(*self.model._rollout_actor.pids, flush=True)

        def _on_step(self):
            return True


    if __name__ == "__main__":
        env = DummyVecEnv([HangsFromTheSecondRollout] * 2)
        model = APO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=1, async_rollouts=True, n_actors={n_actors})
        model.learn(10**9, callback=AnnouncesTheActors())
    """
)


class RecordsTheActor(BaseCallback):
    def __init__(self, kill_after_rollouts: int | None = None):
        super().__init__()
        self.pids: list[int] = []
        self.kill_after_rollouts = kill_after_rollouts

    def _on_rollout_end(self):
        self.pids.append(self.model._rollout_actor.pid)
        if len(self.pids) == self.kill_after_rollouts:
            os.kill(self.pids[-1], signal.SIGKILL)

    def _on_step(self):
        return True


@pytest.mark.usefixtures("shared_memory_unchanged")
def test_an_actor_that_crashes_stops_training_with_its_error():
    model = APO("MlpPolicy", make_vec_env(lambda: FailingCartPole(100), n_envs=1), async_rollouts=True, **SMALL)
    recorder = RecordsTheActor()
    with pytest.raises(RolloutActorError, match=r"rollout actor 0 \(pid \d+\) crashed") as error:
        model.learn(10_000, callback=recorder)
    assert "the simulator broke down" in str(error.value)
    assert model._rollout_actor is None
    assert not alive(recorder.pids[0])


@pytest.mark.usefixtures("shared_memory_unchanged")
def test_an_actor_that_is_killed_stops_training_with_its_name():
    model = APO("MlpPolicy", "CartPole-v1", async_rollouts=True, **SMALL)
    recorder = RecordsTheActor(kill_after_rollouts=2)
    with pytest.raises(RolloutActorError) as error:
        model.learn(10_000, callback=recorder)
    assert f"rollout actor 0 (pid {recorder.pids[-1]}) was killed by signal SIGKILL" in str(error.value)
    assert model._rollout_actor is None
    assert not alive(recorder.pids[-1])
    model.learn(3 * 32)  # a new actor takes over
    assert model.num_timesteps == 3 * 32


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("shared_memory_unchanged")
def test_an_actor_killed_while_it_checks_whether_to_stop_is_still_closed(monkeypatch):
    # The actor below spends nearly all its time in its per-step check for the stop signal,
    # so that a kill lands inside it: closing must never wait on anything the actor held then
    # (a multiprocessing.Event's lock did, and hung the learner: results/async_faults/).
    check_for_stop = _StepRecorder._on_step

    def mostly_checking_for_stop(recorder):
        for _ in range(200):
            keep_going = check_for_stop(recorder)
        del recorder.steps[-199:]
        return keep_going

    class KillsTheActorSoonAfter(RecordsTheActor):
        def __init__(self, delay_s: float):
            super().__init__()
            self.delay_s = delay_s

        def _on_rollout_end(self):
            super()._on_rollout_end()
            if len(self.pids) == 2:  # the actor is collecting the next rollout meanwhile
                time.sleep(self.delay_s)
                os.kill(self.pids[-1], signal.SIGKILL)

    monkeypatch.setattr(_StepRecorder, "_on_step", mostly_checking_for_stop)
    for delay_s in np.linspace(0.001, 0.03, 30):
        model = APO("MlpPolicy", "CartPole-v1", async_rollouts=True, **SMALL)
        recorder = KillsTheActorSoonAfter(delay_s)
        with pytest.raises(RolloutActorError, match="was killed by signal SIGKILL"):
            model.learn(10_000, callback=recorder)
        assert model._rollout_actor is None
        assert not alive(recorder.pids[-1])


@pytest.mark.usefixtures("shared_memory_unchanged")
def test_an_actor_blocked_on_a_full_pipe_leaves_by_itself_when_closed(monkeypatch):
    closed = []
    close = ForkedRolloutActor.close

    def recording_close(actor):
        close(actor)
        closed.append(actor.exitcode)

    monkeypatch.setattr(ForkedRolloutActor, "close", recording_close)

    class SlowLearner(BaseCallback):
        def _on_rollout_end(self):
            time.sleep(2.0)  # meanwhile the actor collects the next rollout and blocks sending it

        def _on_step(self):
            return True

    # 8 x 1024 steps make a rollout of about 1 MB, more than a pipe holds
    model = APO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8), n_steps=1024, batch_size=1024, async_rollouts=True)
    model.learn(2 * 8 * 1024, callback=SlowLearner())
    assert closed == [0]  # it exited on its own (broken pipe), it was not terminated


def start_training(tmp_path, vec_env: str, n_actors: int = 1) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT.format(vec_env=vec_env, n_actors=n_actors))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
        # Ctrl-C handled, as in a terminal, even when this suite was started in the background
        # by a shell without job control (which ignores SIGINT for it, and so for its children)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    actor_pids = [int(pid) for pid in process.stdout.readline().split()]
    assert len(actor_pids) == n_actors and all(alive(pid) for pid in actor_pids)
    return process, actor_pids


@pytest.mark.usefixtures("shared_memory_unchanged")
@pytest.mark.parametrize(("vec_env", "n_actors"), [("DummyVecEnv", 1), ("SubprocVecEnv", 1), ("DummyVecEnv", 2)])
def test_ctrl_c_stops_everything(tmp_path, vec_env, n_actors):
    process, actor_pids = start_training(tmp_path, vec_env, n_actors)
    try:
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole group
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert wait_until(lambda: not session_processes(process.pid)), session_processes(process.pid)
    assert not any(alive(pid) for pid in actor_pids)


@pytest.mark.usefixtures("shared_memory_unchanged")
@pytest.mark.parametrize("n_actors", [1, 2])
def test_a_killed_learner_leaves_no_actor_behind(tmp_path, n_actors):
    process, actor_pids = start_training(tmp_path, "DummyVecEnv", n_actors)
    process.kill()
    process.communicate(timeout=60)
    # Each actor notices at its next step (end of file on its stop pipe) and exits.
    assert wait_until(lambda: not any(alive(pid) for pid in actor_pids))
    assert wait_until(lambda: not session_processes(process.pid)), session_processes(process.pid)
