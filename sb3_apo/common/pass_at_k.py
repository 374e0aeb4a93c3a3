"""
Pass@K on tasks with verifiable rewards: the unbiased estimator, and an
evaluation helper that samples many attempts per problem at once.

Pass@K is the probability that at least one of K attempts at a problem
succeeds. From ``n >= K`` attempts of which ``c`` succeed, the unbiased
estimator (Chen et al., 2021, "Evaluating Large Language Models Trained on
Code") is ``1 - C(n - c, K) / C(n, K)``, averaged over problems.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

from sb3_apo.common.distributions import CategoricalMath, distribution_math


def pass_at_k(n: int, c: int | np.ndarray, k: int) -> float | np.ndarray:
    """
    The unbiased estimator of Pass@K, ``1 - C(n - c, k) / C(n, k)``.

    It is computed as ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)``, a product of
    numbers in ``[0, 1]`` that never forms the (huge) binomial coefficients.

    :param n: the number of attempts per problem
    :param c: the number of successful attempts (an int, or an array of them, one per problem)
    :param k: K, with ``1 <= k <= n``
    :return: the estimate (a float, or an array shaped like ``c``)
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}.")
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= n):
        raise ValueError(f"`k` must be an integer in [1, n={n}], got {k!r}.")
    c_array = np.asarray(c)
    if not np.issubdtype(c_array.dtype, np.integer) or np.any(c_array < 0) or np.any(c_array > n):
        raise ValueError(f"`c` must hold integers in [0, n={n}], got {c!r}.")
    factors = 1.0 - k / np.arange(1, n + 1, dtype=np.float64)  # factor for i = 1..n
    # log(1 - k/i) is -inf for i <= k: those i only occur when n - c < k, where the estimate is 1.
    with np.errstate(divide="ignore"):
        log_factors = np.log(np.clip(factors, 0.0, None))
    cumulative = np.concatenate([[0.0], np.cumsum(log_factors[::-1])])  # cumulative[c] = sum_{i=n-c+1}^{n} log(1 - k/i)
    flat = c_array.ravel().astype(np.int64)
    estimates = np.where(n - flat < k, 1.0, 1.0 - np.exp(cumulative[flat])).reshape(c_array.shape)
    return float(estimates) if estimates.ndim == 0 else estimates


@runtime_checkable
class BatchedTask(Protocol):
    """
    What :func:`evaluate_pass_at_k` needs from an environment (its ``unwrapped``),
    as :class:`sb3_apo.envs.MultiSolutionEnv` provides it.
    """

    n_problems: int

    def batch_reset(self, problems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States and observations of one new episode per problem index."""
        ...

    def batch_step(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """New states, observations, rewards and ``done`` flags, for episodes not yet over."""
        ...


@dataclass
class PassAtKResult:
    """
    The outcome of :func:`evaluate_pass_at_k`.

    :param n_samples: the attempts per problem, ``n``
    :param pass_at: ``{K: mean Pass@K over the problems}``
    :param successes: ``(n_problems,)`` the successful attempts ``c`` of each problem
    :param distinct_solutions: ``(n_problems,)`` the distinct valid solutions (action
        sequences) found for each problem
    """

    n_samples: int
    pass_at: dict[int, float]
    successes: np.ndarray = field(repr=False)
    distinct_solutions: np.ndarray = field(repr=False)

    @property
    def mean_distinct_solutions(self) -> float:
        """The distinct valid solutions found, per problem on average."""
        return float(self.distinct_solutions.mean())


def _policy_of(model: BaseAlgorithm | BasePolicy) -> BasePolicy:
    return model.policy if isinstance(model, BaseAlgorithm) else model


def evaluate_pass_at_k(
    model: BaseAlgorithm | BasePolicy,
    env: gym.Env | str,
    n_samples: int = 32,
    ks: Iterable[int] = (1, 8),
    problems: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    max_batch_size: int = 16384,
    max_episode_steps: int = 1000,
    env_kwargs: dict[str, Any] | None = None,
) -> PassAtKResult:
    """
    Sample ``n_samples`` attempts per problem from a policy and measure Pass@K and
    the distinct valid solutions found.

    Attempts are sampled from the policy's distribution (never deterministically)
    with a generator of their own, so that evaluating never moves torch's or
    numpy's global random streams (a training run with evaluations makes the
    same updates as one without). Observations are passed to the policy as the
    environment gives them: do not use it with a model trained under ``VecNormalize``.
    An attempt succeeds when its episode's total reward is positive; a solution
    is the sequence of actions of a successful attempt.

    :param model: an SB3 model or its policy; the actions must be ``Discrete`` or ``MultiDiscrete``
    :param env: an environment whose ``unwrapped`` implements :class:`BatchedTask`
        (e.g. ``sb3_apo/MultiSolution-v0``), or its registered id
    :param n_samples: ``n``, the attempts per problem
    :param ks: the values of K to report, each in ``[1, n_samples]``
    :param problems: the problem indices to evaluate (default: every problem of the env)
    :param seed: the seed of the sampling
    :param max_batch_size: the most attempts run at once (problems are processed in chunks)
    :param max_episode_steps: a bound on the episode length, against environments that never end
    :param env_kwargs: keyword arguments of ``gym.make`` when ``env`` is an id
    :return: the result
    """
    task = (gym.make(env, **(env_kwargs or {})) if isinstance(env, str) else env).unwrapped
    if not isinstance(task, BatchedTask):
        raise ValueError(f"{type(task).__name__} lacks the batched interface of sb3_apo.common.pass_at_k.BatchedTask.")
    policy = _policy_of(model)
    math = distribution_math(policy.action_space)
    if not isinstance(math, CategoricalMath):
        raise ValueError(f"Pass@K sampling needs Discrete or MultiDiscrete actions, got {policy.action_space!r}.")
    ks = sorted({int(k) for k in ks})
    if n_samples < 1 or not ks or ks[0] < 1 or ks[-1] > n_samples:
        raise ValueError(f"Every K must be in [1, n_samples={n_samples}], got {ks}.")
    problem_ids = np.arange(task.n_problems) if problems is None else np.asarray(problems, dtype=np.int64)
    generator = th.Generator(device=policy.device)
    generator.manual_seed(seed)
    policy.set_training_mode(False)

    successes = np.zeros(len(problem_ids), dtype=np.int64)
    distinct = np.zeros(len(problem_ids), dtype=np.int64)
    problems_per_chunk = max(1, max_batch_size // n_samples)
    for start in range(0, len(problem_ids), problems_per_chunk):
        chunk = problem_ids[start : start + problems_per_chunk]
        attempts = np.repeat(chunk, n_samples)
        state, obs = task.batch_reset(attempts)
        returns = np.zeros(len(attempts))
        history: list[list[tuple[int, ...]]] = [[] for _ in attempts]
        active = np.arange(len(attempts))
        for _ in range(max_episode_steps):
            actions = _sample_actions(policy, math, obs, generator)
            for index, action in zip(active, actions):
                history[index].append(tuple(np.atleast_1d(action).tolist()))
            state, obs, rewards, done = task.batch_step(state, actions)
            returns[active] += rewards
            state, obs, active = state[~done], obs[~done], active[~done]
            if len(active) == 0:
                break
        else:
            raise RuntimeError(f"Some episodes lasted more than max_episode_steps={max_episode_steps} steps.")
        success = (returns > 0).reshape(len(chunk), n_samples)
        successes[start : start + len(chunk)] = success.sum(axis=1)
        for row in range(len(chunk)):
            found = {tuple(history[row * n_samples + sample]) for sample in np.flatnonzero(success[row])}
            distinct[start + row] = len(found)

    pass_at = {k: float(np.mean(pass_at_k(n_samples, successes, k))) for k in ks}
    return PassAtKResult(n_samples=n_samples, pass_at=pass_at, successes=successes, distinct_solutions=distinct)


def _sample_actions(policy: BasePolicy, math: CategoricalMath, obs: np.ndarray, generator: th.Generator) -> np.ndarray:
    """Sample one action per observation: ``(batch,)`` for Discrete, ``(batch, n_sub)`` for MultiDiscrete."""
    with th.no_grad():
        obs_tensor, _ = policy.obs_to_tensor(obs)
        distribution = policy.get_distribution(obs_tensor)  # type: ignore[operator]  # an actor-critic's; BasePolicy lacks it
        params = math.params(distribution)
        columns = [
            th.multinomial(th.softmax(logits, dim=1), 1, generator=generator) for logits in th.split(params, math.nvec, dim=1)
        ]
        actions = th.cat(columns, dim=1).cpu().numpy()
    return actions[:, 0] if len(math.nvec) == 1 and isinstance(policy.action_space, gym.spaces.Discrete) else actions
