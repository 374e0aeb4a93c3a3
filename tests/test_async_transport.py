"""
The transport between the learner and its rollout actors: messages of any size cross in
both directions at once without a deadlock, arrive unchanged, and a silent actor stops
training with an error that names it instead of blocking the learner forever.
"""

import multiprocessing as mp
import os
import signal

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv

from sb3_apo import APO
from sb3_apo.async_rollouts import RolloutActorError, transport
from sb3_apo.async_rollouts.transport import Link, PeerGone

pytestmark = pytest.mark.slow

#: Larger than any pipe's capacity (64 KiB by default, 1 MiB at most unprivileged)
LARGE = 8 << 20


def echo(link: Link) -> None:
    """An actor that sends back each message it receives, then its own large message."""
    end = link.actor_end()
    end.start(on_learner_gone=lambda: None)
    while (message := end.receive()) is not None:
        end.send(message)
    os._exit(0)


@pytest.fixture
def echoing_actor():
    link = Link()
    process = mp.get_context("fork").Process(target=echo, args=(link,), daemon=True)
    process.start()
    learner = link.learner_end(process.sentinel)
    yield learner
    learner.close()
    process.join(10)
    process.kill()


@pytest.mark.timeout(120)
def test_large_messages_cross_each_other_and_arrive_unchanged(echoing_actor):
    rng = np.random.default_rng(0)
    message = {
        "weights": rng.standard_normal(LARGE // 4, dtype=np.float32),
        "fortran": np.asfortranarray(rng.integers(0, 255, (512, 300), dtype=np.uint8)),
        "strided": rng.standard_normal((1000, 4))[:, ::2],  # not contiguous: travels inside the pickle
        "infos": [{"x": np.float64(0.5), "text": "é"}],
        "empty": np.zeros((0, 3)),
    }
    # Three messages larger than the pipe go out before any is read back: the echo's answers
    # (as large) cross them, which blocks both sides forever on a plain pipe.
    for _ in range(3):
        echoing_actor.send(message)
    for _ in range(3):
        echoed = echoing_actor.receive()
        assert echoed.keys() == message.keys()
        for key in ("weights", "fortran", "strided", "empty"):
            assert echoed[key].dtype == message[key].dtype and echoed[key].shape == message[key].shape
            np.testing.assert_array_equal(echoed[key], message[key])
        assert echoed["fortran"].flags.f_contiguous
        assert echoed["infos"] == message["infos"] and type(echoed["infos"][0]["x"]) is np.float64


@pytest.mark.timeout(120)
def test_a_dead_actor_reads_as_gone_and_its_last_messages_are_kept():
    link = Link()

    def says_goodbye(link):
        end = link.actor_end()
        end.send(("error", "x" * LARGE))  # more than the pipe holds: the learner reads it while it arrives
        os._exit(1)

    process = mp.get_context("fork").Process(target=says_goodbye, args=(link,), daemon=True)
    process.start()
    learner = link.learner_end(process.sentinel)
    try:
        assert learner.receive() == ("error", "x" * LARGE)
        process.join(10)
        with pytest.raises(PeerGone):
            learner.receive()
        with pytest.raises(PeerGone):
            learner.send(np.zeros(LARGE, dtype=np.uint8))
    finally:
        learner.close()


#: Weights of several MB, and rollouts of several hundred KB to several MB: with the first two, the
#: weights sent to an actor and the rollout coming back each exceed what a pipe (or a socket pair) holds,
#: which blocked both sides of a plain pipe forever.
LARGE_RUNS = {
    "a 1024x1024 network": (
        "MlpPolicy",
        lambda n_envs: make_vec_env("CartPole-v1", n_envs=8),
        {"n_steps": 512, "batch_size": 1024, "policy_kwargs": {"net_arch": [1024, 1024]}},
    ),
    "CnnPolicy at 84x84": (
        "CnnPolicy",
        # 84x84 grey images, channel first (as several actors need it), two actions
        lambda n_envs: make_vec_env(FakeImageEnv, n_envs=n_envs, env_kwargs={"action_dim": 2, "channel_first": True}),
        {"n_steps": 128, "batch_size": 256},
    ),
    "8 envs x 2048 steps": (
        "MlpPolicy",
        lambda n_envs: make_vec_env("CartPole-v1", n_envs=8),
        {"n_steps": 2048, "batch_size": 4096},
    ),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("n_actors", [1, 2])
@pytest.mark.parametrize("run", list(LARGE_RUNS))
def test_training_with_large_weights_and_rollouts_does_not_hang(run, n_actors):
    policy, make_env, kwargs = LARGE_RUNS[run]
    env = make_env(4)
    model = APO(policy, env, n_epochs=1, async_rollouts=True, n_actors=n_actors, seed=0, **kwargs)
    n_rollouts = 3  # the learner's weights and the actor's rollouts cross twice
    model.learn(n_rollouts * model.n_steps * env.num_envs)
    assert model.num_timesteps == n_rollouts * model.n_steps * env.num_envs
    assert model._rollout_actor is None


class StopsTheActor(BaseCallback):
    """Stops (SIGSTOP) every actor at the end of the first rollout: it keeps its pipes, but never answers."""

    def __init__(self):
        super().__init__()
        self.pids: list[int] = []

    def _on_rollout_end(self):
        if not self.pids:
            self.pids = list(self.model._rollout_actor.pids)
            for pid in self.pids:
                os.kill(pid, signal.SIGSTOP)

    def _on_step(self):
        return True


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("net_arch", "n_actors"),
    [
        ([64, 64], 1),  # the weights fit in the pipe: the learner waits for a rollout that never comes
        ([1024, 1024], 1),  # they do not: the learner waits to send them
        ([1024, 1024], 2),
    ],
)
def test_a_silent_actor_stops_training_with_its_name(monkeypatch, net_arch, n_actors):
    monkeypatch.setattr(transport, "SILENCE_TIMEOUT_S", 2.0)
    model = APO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=2),
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        async_rollouts=True,
        n_actors=n_actors,
        policy_kwargs={"net_arch": net_arch},
    )
    stopper = StopsTheActor()
    with pytest.raises(RolloutActorError, match=r"rollout actor \d \(pid \d+\) stopped answering") as error:
        model.learn(10_000, callback=stopper)
    assert "2 s" in str(error.value)
    assert model._rollout_actor is None
    for pid in stopper.pids:  # closed: terminated although stopped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
