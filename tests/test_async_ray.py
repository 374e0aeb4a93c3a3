"""
The Ray backend of asynchronous rollouts (``actor_backend="ray"``): env recipes, rollouts equal to
the forked actors', a two-node cluster, faults, Ctrl-C, and the rl-zoo3 launcher with ``RAY_ADDRESS``.
"""

import os
import signal
import subprocess
import sys
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
import ray
import ray.cloudpickle
import torch as th
from ray.cluster_utils import Cluster
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_apo import APO, VecEnvRecipe
from sb3_apo.async_rollouts import RolloutActorError, ray_actors
from sb3_apo.common.checks import HyperparameterError

# Ray workers import nothing from tests/: the envs and functions of this module travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Each test runs in a process forked for it (tests/conftest.py): Ray's threads outlive ray.shutdown(),
# and the tests that fork actors afterwards, in the same pytest worker, must not inherit them.
pytestmark = pytest.mark.forked

#: Small object stores: several Ray nodes share this machine's memory in the tests.
OBJECT_STORE_BYTES = 200 * 1024**2


def small_apo(env, **kwargs):
    options = dict(n_steps=32, batch_size=64, n_epochs=2, async_rollouts=True, actor_backend="ray", seed=0)
    return APO("MlpPolicy", env, **{**options, **kwargs})


class CrashingEnv(gym.Wrapper):
    """Pendulum whose simulator raises at its 40th step (after every reset of a new process)."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == 40:
            raise RuntimeError("the simulator crashed")
        return super().step(action)


# ----------------------------------------------------------------- recipes (no Ray)


@pytest.mark.parametrize(
    "recipe",
    [
        VecEnvRecipe("Pendulum-v1", n_envs=4, seed=5),
        VecEnvRecipe(make_env=lambda rank, seed: gym.make("Pendulum-v1"), n_envs=4, seed=5),
    ],
    ids=["env id", "make_env"],
)
def test_a_recipe_builds_shards_that_are_its_envs(recipe):
    whole = recipe.build()
    first, second = recipe.build(2, 0), recipe.build(2, 2)
    assert whole.env_recipe is recipe and "env_recipe" not in vars(first)
    np.testing.assert_array_equal(whole.reset(), np.concatenate([first.reset(), second.reset()]))


def test_the_ray_backend_refuses_an_env_it_cannot_rebuild():
    with pytest.raises(HyperparameterError, match=r"VecEnvRecipe.*make_env\(rank, seed\)"):
        small_apo(DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2))
    with pytest.raises(HyperparameterError, match="`n_actors` must be at most the number of envs"):
        small_apo(VecEnvRecipe("Pendulum-v1", n_envs=2), n_actors=3)
    with pytest.raises(HyperparameterError, match="`actor_backend` must be one of 'fork', 'ray', got 'threads'"):
        small_apo("Pendulum-v1", actor_backend="threads")
    with pytest.raises(HyperparameterError, match="exactly one of `env_id` and `make_env`"):
        VecEnvRecipe()
    # A wrapper added on top of a built env hides the recipe, which would build the env without it
    with pytest.raises(HyperparameterError, match="VecNormalize object cannot be rebuilt"):
        small_apo(VecNormalize(VecEnvRecipe("Pendulum-v1", n_envs=2).build()))


def test_forked_actors_warn_in_a_process_where_ray_is_initialised(monkeypatch):
    class InitialisedRay:
        @staticmethod
        def is_initialized():
            return True

    monkeypatch.setitem(sys.modules, "ray", InitialisedRay)
    model = small_apo("Pendulum-v1", actor_backend="fork")
    with pytest.warns(RuntimeWarning, match="Ray has run is unsafe.*actor_backend='ray', or train with Ray in another"):
        model.learn(2 * model.n_steps)


def test_forked_actors_warn_where_the_package_ran_ray_and_shut_it_down(monkeypatch):
    model = small_apo("Pendulum-v1", actor_backend="fork")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # none before Ray has run
        model.learn(2 * model.n_steps)
    monkeypatch.setattr(ray_actors, "ray_has_run_here", True)  # as test_ray_rollouts_equal_the_forked_actors shows
    assert not ray.is_initialized()
    with pytest.warns(RuntimeWarning, match="Ray's threads outlive ray.shutdown"):
        model.learn(2 * model.n_steps)


def test_an_env_id_gives_one_env_per_actor():
    for backend in ("fork", "ray"):
        model = small_apo("Pendulum-v1", n_actors=3, actor_backend=backend)
        assert model.env.num_envs == 3 and model.env_recipe.n_envs == 3


def test_a_model_loaded_or_given_a_recipe_keeps_it(tmp_path):
    recipe = VecEnvRecipe("Pendulum-v1", n_envs=2)
    model = small_apo(recipe, n_actors=2)
    model.save(tmp_path / "model")
    assert APO.load(tmp_path / "model", env=recipe).env_recipe is recipe
    model.set_env(recipe.build())
    assert model.env_recipe is recipe
    with pytest.raises(HyperparameterError, match="cannot be rebuilt"):
        model.set_env(make_vec_env("Pendulum-v1", n_envs=2))


# ----------------------------------------------------------------- a local Ray instance, started by the package


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("max_policy_lag", "n_actors"), [(0, 1), (1, 2)])
def test_ray_rollouts_equal_the_forked_actors(max_policy_lag, n_actors):
    """From one recipe and seed, training is the same bit for bit: every rollout was."""
    results = {}
    for backend in ("fork", "ray"):
        recipe = VecEnvRecipe("Pendulum-v1", n_envs=4, seed=1, vec_env_wrapper=VecNormalize)
        model = small_apo(recipe, actor_backend=backend, n_actors=n_actors, max_policy_lag=max_policy_lag, seed=3)
        model.learn(4 * model.n_steps * 4)
        statistics = model.get_vec_normalize_env().obs_rms
        results[backend] = (th.nn.utils.parameters_to_vector(model.policy.parameters()).detach(), statistics)
    assert not ray.is_initialized()  # the package started a local instance, and shut it down
    assert ray_actors.ray_has_run_here  # and forking this process now warns
    (fork_parameters, fork_statistics), (ray_parameters, ray_statistics) = results["fork"], results["ray"]
    assert th.equal(fork_parameters, ray_parameters)
    assert fork_statistics.count == ray_statistics.count
    np.testing.assert_allclose(fork_statistics.mean, ray_statistics.mean, rtol=1e-12, atol=1e-12)


#: Users' sizes: weights of several MB (rl-zoo3's tuned networks are 256x256), CNN rollouts of several MB.
LARGE_RUNS = {
    "a 1024x1024 network": (
        "MlpPolicy",
        VecEnvRecipe("CartPole-v1", n_envs=8),
        {"n_steps": 512, "batch_size": 1024, "policy_kwargs": {"net_arch": [1024, 1024]}},
    ),
    "CnnPolicy at 84x84": (  # grey images, channel last as an Atari frame, two actions
        "CnnPolicy",
        VecEnvRecipe(FakeImageEnv, n_envs=4, env_kwargs={"action_dim": 2}),
        {"n_steps": 128, "batch_size": 256},
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("run", list(LARGE_RUNS))
def test_ray_actors_train_at_users_sizes(run):
    policy, recipe, kwargs = LARGE_RUNS[run]
    model = APO(policy, recipe, n_epochs=1, async_rollouts=True, actor_backend="ray", n_actors=2, seed=0, **kwargs)
    model.learn(3 * model.n_steps * recipe.n_envs)
    assert model.num_timesteps == 3 * model.n_steps * recipe.n_envs
    assert model._rollout_actor is None and not ray.is_initialized()


class KillsAnActor(BaseCallback):
    """SIGKILLs actor 0's process at the end of rollouts ``at`` (as a lost node or the OOM killer would)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.rollouts, self.restarts = at, 0, []

    def _on_rollout_end(self):
        self.rollouts += 1
        self.restarts.append(self.logger.name_to_value["async/actor_restarts"])
        if self.rollouts in self.at:
            os.kill(self.model._rollout_actor.pids[0], signal.SIGKILL)

    def _on_step(self):
        return True


@pytest.mark.timeout(600)
def test_a_killed_ray_actor_is_restarted_once_and_a_second_failure_stops_training():
    survived = KillsAnActor(at={2})
    model = small_apo(VecEnvRecipe("Pendulum-v1", n_envs=4), n_actors=2)
    with pytest.warns(RuntimeWarning, match=r"Ray rollout actor 0 .* failed and is restarted"):
        model.learn(6 * model.n_steps * 4, callback=survived)
    assert model.num_timesteps == 6 * model.n_steps * 4
    assert survived.restarts[-1] == 1 and survived.restarts[0] == 0

    stopped = KillsAnActor(at={2, 4})
    model = small_apo(VecEnvRecipe("Pendulum-v1", n_envs=4), n_actors=2)
    with (
        pytest.warns(RuntimeWarning, match="failed and is restarted"),
        pytest.raises(RolloutActorError, match=r"Ray rollout actor 0 \(pid \d+ on .*, node .*\) failed again"),
    ):
        model.learn(8 * model.n_steps * 4, callback=stopped)
    assert not ray.is_initialized()


@pytest.mark.timeout(300)
def test_actors_the_cluster_cannot_place_stop_training_with_what_they_asked_for(monkeypatch):
    monkeypatch.setattr(ray_actors, "PLACEMENT_TIMEOUT_S", 3.0)
    model = small_apo("Pendulum-v1", n_actors=2, ray_actor_options={"resources": {"gpu_simulator": 1}})
    with pytest.raises(RolloutActorError, match=r"placed 0 of 2 rollout actors in 3 s.*'gpu_simulator': 1.*the cluster has"):
        model.learn(4 * model.n_steps * 2)
    assert not ray.is_initialized()


@pytest.mark.timeout(600)
def test_an_env_crash_in_a_ray_actor_stops_training_with_its_traceback():
    recipe = VecEnvRecipe("Pendulum-v1", n_envs=2, wrapper_class=CrashingEnv)
    model = small_apo(recipe, n_actors=1)
    # Restarted once with fresh envs, which crash again: the second failure names the error
    with (
        pytest.warns(RuntimeWarning, match="the simulator crashed"),
        pytest.raises(RolloutActorError, match=r"(?s)failed again after 1 restart.*RuntimeError: the simulator crashed"),
    ):
        model.learn(10 * model.n_steps * 2)


class Interrupts(BaseCallback):
    """Raises KeyboardInterrupt (Ctrl-C) in the learner at the second rollout, keeping the actors' pids."""

    def __init__(self):
        super().__init__()
        self.pids, self.niceness, self.rollouts = [], [], 0

    def _on_rollout_end(self):
        self.rollouts += 1
        if self.rollouts == 2:
            self.pids = list(self.model._rollout_actor.pids)
            self.niceness = [os.getpriority(os.PRIO_PROCESS, pid) for pid in self.pids]
            raise KeyboardInterrupt

    def _on_step(self):
        return True


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(300)
def test_ctrl_c_stops_the_ray_actors_and_the_local_instance():
    interrupts = Interrupts()
    model = small_apo("Pendulum-v1", n_actors=2)
    with pytest.raises(KeyboardInterrupt):
        model.learn(10 * model.n_steps * 2, callback=interrupts)
    # The local instance's actors run at the learner's niceness (Ray's default for workers is 15)
    assert interrupts.niceness == [os.getpriority(os.PRIO_PROCESS, 0)] * 2
    assert not ray.is_initialized() and model._rollout_actor is None
    deadline = time.monotonic() + 30
    while any(map(_alive, interrupts.pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert interrupts.pids and not any(map(_alive, interrupts.pids))


# ----------------------------------------------------------------- a two-node cluster on this machine


@pytest.fixture
def two_node_cluster():
    """Two raylets, each offering one ``rollout_slot``: actors that ask for one land on both nodes."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"rollout_slot": 1}, "object_store_memory": OBJECT_STORE_BYTES},
    )
    cluster.add_node(num_cpus=1, resources={"rollout_slot": 1}, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


class RecordsTheActors(BaseCallback):
    def __init__(self):
        super().__init__()
        self.nodes, self.handles = [], []

    def _on_rollout_end(self):
        group = self.model._rollout_actor
        self.nodes, self.handles = group.nodes, [slot.handle for slot in group.actors]

    def _on_step(self):
        return True


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_actors_on_both_nodes_of_a_cluster(two_node_cluster):
    ray.init(address=two_node_cluster.address)
    records = RecordsTheActors()
    model = small_apo(
        VecEnvRecipe("Pendulum-v1", n_envs=4, vec_env_wrapper=VecNormalize),
        n_actors=2,
        ray_actor_options={"resources": {"rollout_slot": 1}},
    )
    model.learn(4 * model.n_steps * 4, callback=records)
    assert model.num_timesteps == 4 * model.n_steps * 4
    assert len(set(records.nodes)) == 2 == len({node["NodeID"] for node in ray.nodes() if node["Alive"]})
    # The user's Ray stays up; the package's actors are gone
    assert ray.is_initialized()
    for handle in records.handles:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(handle.where.remote(), timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_zoo_launcher_trains_on_the_cluster_of_ray_address(two_node_cluster, tmp_path):
    command = [
        sys.executable,
        "-m",
        "sb3_apo.train",
        "--algo",
        "apo",
        "--env",
        "Pendulum-v1",
        "-n",
        "1024",
        "--seed",
        "0",
        "-f",
        str(tmp_path),
        "-params",
        "n_envs:4",
        "n_steps:64",
        "async_rollouts:True",
        "actor_backend:'ray'",
        "n_actors:2",
        "ray_actor_options:{'resources':{'rollout_slot':1}}",
    ]
    environment = {**os.environ, "RAY_ADDRESS": two_node_cluster.address}
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=500)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (tmp_path / "apo" / "Pendulum-v1_1" / "Pendulum-v1.zip").exists()


class RemovesANode(BaseCallback):
    """At the end of the second rollout, removes from the cluster the node that runs actor 0 (a lost machine)."""

    def __init__(self, cluster):
        super().__init__()
        self.cluster, self.rollouts, self.removed, self.restarts, self.nodes = cluster, 0, None, [], []

    def _on_rollout_end(self):
        self.rollouts += 1
        group = self.model._rollout_actor
        self.restarts.append(self.logger.name_to_value["async/actor_restarts"])
        self.nodes = group.nodes
        if self.rollouts == 2:
            (node,) = [node for node in self.cluster.list_all_nodes() if node.node_id == group.nodes[0]]
            self.removed = node.node_id
            self.cluster.remove_node(node)

    def _on_step(self):
        return True


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_actor_whose_node_is_lost_is_restarted_on_another_node():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES})
    for _ in range(3):  # two nodes for the actors, and a spare
        cluster.add_node(num_cpus=1, resources={"rollout_slot": 1}, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        removes = RemovesANode(cluster)
        model = small_apo(
            VecEnvRecipe("Pendulum-v1", n_envs=4), n_actors=2, ray_actor_options={"resources": {"rollout_slot": 1}}
        )
        model.learn(5 * model.n_steps * 4, callback=removes)
        assert model.num_timesteps == 5 * model.n_steps * 4
        assert removes.restarts[-1] == 1 and removes.removed not in removes.nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
