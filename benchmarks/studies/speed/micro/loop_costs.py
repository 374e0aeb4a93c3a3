"""
What the loop's pieces cost, in process CPU time, on Hopper-v5 with the paper's
settings (8 envs x 256 steps, minibatches of 512, 10 epochs, K = 2):

1. one minibatch, forward and backward, on an APO model that has trained one rollout: PPO's
   clipped loss and value loss alone, then with APO's sampled anchor penalty (the loop's form,
   fed with pi's loc and scale, and the former form of commit 3b0e1d6, which concatenated them
   first and is reproduced below for the comparison), then with PPOPenalty's
   exact KL (the loop's ``kl_to`` and the former ``kl`` on the concatenated parameters);
   interleaved, median over rounds;
2. whole updates (``train()`` on one rollout of 2,048 steps) of SB3's PPO, APO, SPO and
   PPOPenalty, each model built with the same settings and seed, interleaved;
3. rollouts of 2,048 steps of one APO model: SB3's ``collect_rollouts`` as SB3's PPO runs it (its
   policy calls under ``no_grad``), the same inside torch's inference mode, and the loop's
   ``collect_rollouts`` (inference mode, no distribution argument checks, its own observation
   checks, the pass for pi_old's parameters), interleaved.

Run from the repository root, with nothing else on the machine:
python benchmarks/studies/speed/micro/loop_costs.py > results/speed/micro/loop_costs.txt
"""

import platform
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize
from torch.autograd.function import once_differentiable

from sb3_apo import APO, SPO, PPOPenalty
from sb3_apo.common.distributions import LOG_RATIO_LIMIT, clamp_log_ratio

th.set_num_threads(1)
SETTINGS = dict(
    n_steps=256,
    batch_size=512,
    n_epochs=10,
    clip_range_vf=0.2,
    seed=0,
    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), optimizer_kwargs=dict(eps=1e-5)),
)
ROUNDS, REPEATS = 30, 50


class FormerAnchorPenalty(th.autograd.Function):
    """The anchor penalty's Function as of 3b0e1d6, on concatenated ``[loc, scale]`` parameters."""

    @staticmethod
    def forward(ctx: Any, new_params: th.Tensor, old_params: th.Tensor, noise: th.Tensor) -> th.Tensor:
        old_loc, old_scale = old_params.chunk(2, dim=-1)
        new_loc, new_scale = new_params.chunk(2, dim=-1)
        standardised = (old_loc + old_scale * noise - new_loc) / new_scale
        log_ratio = (0.5 * (noise**2 - standardised**2) + th.log(old_scale / new_scale)).sum(dim=-1)
        unclamped = log_ratio.abs() <= LOG_RATIO_LIMIT
        ratio = th.exp(clamp_log_ratio(log_ratio))
        ctx.save_for_backward(new_scale, standardised, ratio, unclamped)
        return 0.5 * ((ratio - 1.0) ** 2).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_penalty: th.Tensor) -> tuple[th.Tensor, None, None]:
        new_scale, standardised, ratio, unclamped = ctx.saved_tensors
        grad_log_ratio = (grad_penalty / ratio.numel() * ratio * (ratio - 1.0) * unclamped).unsqueeze(-1)
        grad_loc = (grad_log_ratio * standardised).sum(dim=0) / new_scale
        grad_scale = (grad_log_ratio * (standardised**2 - 1.0)).sum(dim=0) / new_scale
        return th.cat([grad_loc, grad_scale], dim=-1), None, None


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """The process CPU seconds of each call, called once per round in turn."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.thread_time()
            call()
            times[name].append(time.thread_time() - started)
    return times


def print_per_1k_steps(what: str, reference: str, times: dict[str, list[float]]) -> None:
    """Each median as ms per 1,000 of 2,048 steps, and beyond the first's (the reference's)."""
    baseline = np.median(next(iter(times.values())))
    for name, seconds in times.items():
        median = np.median(seconds)
        print(
            f"{what}, {name}: {1000 * median / 2.048:.1f} ms per 1,000 steps "
            f"(beyond {reference}: {1000 * (median - baseline) / 2.048:+.1f}; median of {len(seconds)}, interleaved)"
        )


def new_env() -> VecNormalize:
    return VecNormalize(make_vec_env("Hopper-v5", n_envs=8, seed=0))


commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"{platform.machine()}, torch {th.__version__}, 1 thread, code {commit}; process CPU time (time.thread_time)")

# 1. one minibatch
model = APO("MlpPolicy", new_env(), **SETTINGS)
model.learn(2048)
data = next(model.rollout_buffer.get(512))
math_, generator = model.distribution_math, th.Generator().manual_seed(0)
old_params = data.old_distribution_params


def minibatch(term: str) -> None:
    values, log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions)
    ratio = th.exp(log_prob - data.old_log_prob)
    advantages = data.advantages
    loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 0.8, 1.2)).mean()
    loss = loss + 0.5 * ((data.returns - values.flatten()) ** 2).mean()
    distribution = model.policy.action_dist
    if term == "APO's anchor penalty (loop's form)":
        loss = loss + math_.anchor_penalty(old_params, distribution, data.actions, 2, generator)
    elif term == "APO's anchor penalty (former form)":
        noise = th.randn((2, *old_params.chunk(2, dim=-1)[0].shape), generator=generator)
        loss = loss + FormerAnchorPenalty.apply(math_.params(distribution), old_params, noise)
    elif term == "PPOPenalty's KL (loop's kl_to)":
        loss = loss + math_.kl_to(old_params, distribution).mean()
    elif term == "PPOPenalty's KL (former: kl on concatenated parameters)":
        loss = loss + math_.kl(old_params, math_.params(distribution)).mean()
    model.policy.optimizer.zero_grad()
    loss.backward()


terms = [
    "PPO's losses alone",
    "APO's anchor penalty (loop's form)",
    "APO's anchor penalty (former form)",
    "PPOPenalty's KL (loop's kl_to)",
    "PPOPenalty's KL (former: kl on concatenated parameters)",
]
times: dict[str, list[float]] = {term: [] for term in terms}
for _ in range(ROUNDS):
    for term in terms:
        started = time.thread_time()
        for _ in range(REPEATS):
            minibatch(term)
        times[term].append(1e6 * (time.thread_time() - started) / REPEATS)
base = np.median(times[terms[0]])
for term in terms:
    median = np.median(times[term])
    print(f"1. minibatch of 512, forward + backward, {term}: {median:.0f} us (beyond PPO's losses: {median - base:+.0f})")

# 2. whole updates
models = {name: cls("MlpPolicy", new_env(), **SETTINGS) for name, cls in (("ppo", PPO), ("apo", APO), ("spo", SPO))}
models["ppo_penalty"] = PPOPenalty("MlpPolicy", new_env(), **{**SETTINGS, "adaptive_kl": True})
for each in models.values():
    each.learn(2048)
print_per_1k_steps("2. update of 2,048 samples", "PPO's", interleaved({name: each.train for name, each in models.items()}, 16))

# 3. rollouts
_, callback = model._setup_learn(10**7, None)
callback.on_training_start(locals(), globals())


def sb3_rollout() -> None:
    OnPolicyAlgorithm.collect_rollouts(model, model.env, callback, model.rollout_buffer, model.n_steps)


def sb3_rollout_in_inference_mode() -> None:
    with th.inference_mode():
        sb3_rollout()


rollouts = {
    "SB3's collect_rollouts": sb3_rollout,
    "SB3's collect_rollouts in inference mode": sb3_rollout_in_inference_mode,
    "the loop's collect_rollouts": lambda: model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps),
}
print_per_1k_steps("3. rollout of 2,048 steps", "SB3's", interleaved(rollouts, 24))

# 4. the optimizer step
IMPLEMENTATIONS = {
    "SB3's default (for-loop)": {},
    "foreach=True (the loop's)": {"foreach": True},
    "fused=True": {"fused": True},
}
policies = {}
for name, implementation in IMPLEMENTATIONS.items():
    kwargs = {**SETTINGS["policy_kwargs"], "optimizer_kwargs": {"eps": 1e-5, **implementation}}
    policies[name] = PPO("MlpPolicy", new_env(), **{**SETTINGS, "policy_kwargs": kwargs}).policy
default = policies["SB3's default (for-loop)"]
gradients = [[0.01 * th.randn_like(p) for p in default.parameters()] for _ in range(200)]


def adam_step(policy: Any, step_gradients: list[th.Tensor]) -> None:
    for parameter, gradient in zip(policy.parameters(), step_gradients, strict=True):
        parameter.grad = gradient.clone()
    policy.optimizer.step()


step_times: dict[str, list[float]] = {name: [] for name in policies}
for step_gradients in gradients:
    for name, policy in policies.items():
        started = time.thread_time()
        adam_step(policy, step_gradients)
        step_times[name].append(time.thread_time() - started)
for name, policy in policies.items():
    drift = max((a - b).abs().max().item() for a, b in zip(default.parameters(), policy.parameters(), strict=True))
    print(
        f"4. Adam step of the policy, {name}: {1e6 * np.median(step_times[name]):.0f} us (median of 200, interleaved); "
        f"largest parameter difference to SB3's default after 200 steps on the same gradients: {drift:.1e}"
    )
