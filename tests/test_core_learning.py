"""Each algorithm learns: deterministic evaluation return on CartPole-v1 and Pendulum-v1.

Budgets (stated in the README): 60,000 steps each, with rl-zoo3's PPO settings for
these environments (CartPole: 8 envs x 32 steps, 20 epochs, linearly decaying
learning rate 1e-3 and clip range 0.2; Pendulum: 4 envs x 1024 steps, 10 epochs,
learning rate 1e-3, gSDE). PPOPenalty uses its defaults (no clipping, adaptive beta).
"""

import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_apo import APO, SPO, PPOPenalty

pytestmark = pytest.mark.slow  # learning runs

BUDGET = 60_000


def linear(initial: float):
    return lambda progress_remaining: progress_remaining * initial


def settings(env_id: str, algo: type) -> dict:
    if env_id == "CartPole-v1":
        kwargs = dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, learning_rate=linear(1e-3))
        if algo is not PPOPenalty:
            kwargs["clip_range"] = linear(0.2)
        return kwargs
    return dict(n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, learning_rate=1e-3, use_sde=True, sde_sample_freq=4)


@pytest.mark.parametrize("algo", [APO, PPOPenalty, SPO])
@pytest.mark.parametrize(("env_id", "n_envs", "threshold"), [("CartPole-v1", 8, 475.0), ("Pendulum-v1", 4, -250.0)])
def test_learns(algo, env_id, n_envs, threshold):
    model = algo("MlpPolicy", make_vec_env(env_id, n_envs, seed=0), seed=0, **settings(env_id, algo))
    model.learn(BUDGET)
    mean_return, _ = evaluate_policy(model, make_vec_env(env_id, 1, seed=1000), n_eval_episodes=20, deterministic=True)
    assert mean_return >= threshold, f"{algo.__name__} on {env_id}: {mean_return:.1f} after {BUDGET} steps"
