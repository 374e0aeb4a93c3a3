"""
Process-CPU micro-measurements behind the speed study (results/speed/README.md), on Hopper-v5 with
the paper's settings (8 envs x 256 steps, minibatches of 512, 10 epochs):

1. APO's sampled anchor penalty on one minibatch, forward and backward: plain autograd (the
   AnchorSet form), the autograd Function the loss uses, and torch.compile of the plain form;
2. APO's whole update with the Function against the plain form, interleaved;
3. the rollout: pi_old's parameters copied out of each step's forward pass (a forward hook, the
   loop's former way) against one pass after the rollout (the loop's way now), interleaved;
4. the diagnostics pass after an update.

Run from the repository root: python benchmarks/studies/speed/micro/micro.py > results/speed/micro/stdout.txt
It ran at commit e6492e1 and runs up to 3b0e1d6: from c7de275 on, the anchor penalty takes pi's
distribution rather than its concatenated parameters (its measurement now: loop_costs.py).
"""

import platform
import time

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from sb3_apo import APO
from sb3_apo.common.distributions import DiagGaussianMath

th.set_num_threads(1)
SETTINGS = dict(
    n_steps=256,
    batch_size=512,
    n_epochs=10,
    clip_range_vf=0.2,
    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), optimizer_kwargs=dict(eps=1e-5)),
)


def cpu_us(fn, repeats=500, warmup=20) -> float:
    for _ in range(warmup):
        fn()
    start = time.thread_time()
    for _ in range(repeats):
        fn()
    return 1e6 * (time.thread_time() - start) / repeats


def plain_penalty(self, old_params, new_params, actions, n_anchor_actions, generator):
    return self.anchors(old_params, new_params, actions, n_anchor_actions, generator).chi2_penalty()


print(f"{platform.machine()}, torch {th.__version__}, 1 thread; process CPU time (time.thread_time)")

# 1. one minibatch of 512 states, 3 action dimensions, K = 2
math_, generator = DiagGaussianMath(3), th.Generator().manual_seed(0)
old = th.cat([th.randn(512, 3), th.rand(512, 3) + 0.5], dim=1)
loc, log_std = th.randn(512, 3, requires_grad=True), th.zeros(3, requires_grad=True)


def new_params():  # as SB3's DiagGaussianDistribution builds them, with gradient
    return th.cat([loc, th.ones_like(loc) * log_std.exp()], dim=1)


def penalty_of_noise(new_params_, old_params, noise):  # the plain form on given draws, for torch.compile
    old_loc, old_scale = old_params.chunk(2, dim=-1)
    new_loc, new_scale = new_params_.chunk(2, dim=-1)
    standardised = (old_loc + old_scale * noise - new_loc) / new_scale
    log_ratio = (0.5 * (noise**2 - standardised**2) + th.log(old_scale / new_scale)).sum(dim=-1)
    return 0.5 * ((th.exp(log_ratio.clamp(-20.0, 20.0)) - 1.0) ** 2).mean()


compiled = th.compile(penalty_of_noise, dynamic=False)
started = time.time()
compiled(new_params(), old, th.randn((2, 512, 3), generator=generator)).backward()
print(f"1. torch.compile: {time.time() - started:.1f} s to compile")
baseline = cpu_us(lambda: new_params().mean().backward())
for name, fn in (
    ("plain autograd", lambda: plain_penalty(math_, old, new_params(), None, 2, generator).backward()),
    ("autograd Function", lambda: math_.anchor_penalty(old, new_params(), None, 2, generator).backward()),
    ("torch.compile", lambda: compiled(new_params(), old, th.randn((2, 512, 3), generator=generator)).backward()),
):
    print(
        f"1. anchor penalty, forward + backward, {name}: {cpu_us(fn) - baseline:.0f} us per minibatch (beyond a bare backward)"
    )

# 2. and 3. on a model that has trained a little
model = APO("MlpPolicy", VecNormalize(make_vec_env("Hopper-v5", n_envs=8, seed=0)), seed=0, **SETTINGS)
model.learn(4096)
updates = {"Function": [], "plain": []}
fused = DiagGaussianMath.anchor_penalty
for _ in range(16):
    for name in updates:
        DiagGaussianMath.anchor_penalty = fused if name == "Function" else plain_penalty
        started = time.thread_time()
        model.train()
        updates[name].append(time.thread_time() - started)
DiagGaussianMath.anchor_penalty = fused
for name, times in updates.items():
    print(f"2. APO update of 2,048 samples with the {name} form: {1000 * np.median(times):.1f} ms (median of 16, interleaved)")

buffer = model.rollout_buffer
_, callback = model._setup_learn(4096, None)
callback.on_training_start(locals(), globals())


def collect_with_hook():
    def record(policy, inputs, outputs):
        buffer.distribution_params[buffer.pos] = (
            model.distribution_math.params(model.policy.action_dist).detach().cpu().numpy()
        )

    hook = model.policy.register_forward_hook(record)
    try:
        OnPolicyAlgorithm.collect_rollouts(model, model.env, callback, buffer, model.n_steps)
    finally:
        hook.remove()


rollouts = {"SB3's collect_rollouts alone": [], "a copy at every step (hook)": [], "one pass after the rollout": []}
for _ in range(30):
    for name in rollouts:
        started = time.thread_time()
        if name == "one pass after the rollout":
            model._collect_rollouts_locally(model.env, callback, buffer, model.n_steps)
        elif name == "a copy at every step (hook)":
            collect_with_hook()
        else:
            OnPolicyAlgorithm.collect_rollouts(model, model.env, callback, buffer, model.n_steps)
        rollouts[name].append(time.thread_time() - started)
bare = np.median(rollouts["SB3's collect_rollouts alone"])
for name, times in rollouts.items():
    per_1k, beyond = 1000 * np.median(times) / 2.048, 1000 * (np.median(times) - bare) / 2.048
    print(f"3. rollout, {name}: {per_1k:.1f} ms per 1,000 steps (beyond SB3's: {beyond:+.1f})")

model.train()
print(f"4. diagnostics pass after an update: {cpu_us(model.measure_update, repeats=50, warmup=5) / 1000:.2f} ms")
