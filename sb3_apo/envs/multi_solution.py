"""
A small task with verifiable rewards and several valid solutions per problem.

A problem is a start number ``x`` and a target ``y`` in ``Z_m`` (integers
modulo ``m``). In ``horizon`` steps the agent applies one of eight arithmetic
operations to the current number; the episode ends after the last step with
reward 1 if the number equals the target, else 0. Every problem of the set has
between ``min_solutions`` and ``max_solutions`` valid operation sequences, so a
policy can solve a problem in several distinct ways, and sampling it ``n``
times per problem gives meaningful Pass@1, Pass@K and counts of distinct valid
solutions (see :mod:`sb3_apo.common.pass_at_k`).

The problems come from a fixed, seeded problem set split into a ``"train"``
and a ``"test"`` half; each ``reset()`` draws one problem of the split
uniformly (or takes ``options={"problem": index}``).
"""

import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_apo.common.checks import check_choice, check_range

#: The operations, as ``(name, multiplier, addend)``: ``x -> multiplier * x + addend (mod m)``.
OPERATIONS: tuple[tuple[str, int, int], ...] = (
    ("+1", 1, 1),
    ("+2", 1, 2),
    ("+3", 1, 3),
    ("+5", 1, 5),
    ("*2", 2, 0),
    ("*3", 3, 0),
    ("-1", 1, -1),
    ("-4", 1, -4),
)
_MULTIPLIERS = np.array([operation[1] for operation in OPERATIONS], dtype=np.int64)
_ADDENDS = np.array([operation[2] for operation in OPERATIONS], dtype=np.int64)

SPLITS = ("train", "test")


def apply_operations(values: np.ndarray, actions: np.ndarray, modulus: int) -> np.ndarray:
    """
    Apply one operation to each number.

    :param values: the current numbers, in ``[0, modulus)``
    :param actions: the index of the operation applied to each number (same shape)
    :param modulus: ``m``
    :return: the new numbers
    """
    actions = np.asarray(actions, dtype=np.int64)
    return (_MULTIPLIERS[actions] * np.asarray(values, dtype=np.int64) + _ADDENDS[actions]) % modulus


@functools.lru_cache(maxsize=8)
def _solution_counts(modulus: int, horizon: int) -> np.ndarray:
    """``counts[x, y]``: the number of operation sequences of length ``horizon`` from ``x`` to ``y``."""
    n_operations = len(OPERATIONS)
    sequences = np.indices((n_operations,) * horizon).reshape(horizon, -1).T  # (n_operations**horizon, horizon)
    values = np.repeat(np.arange(modulus)[:, None], len(sequences), axis=1)  # (modulus, n_sequences)
    for step in range(horizon):
        values = apply_operations(values, np.broadcast_to(sequences[:, step], values.shape), modulus)
    counts = np.zeros((modulus, modulus), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(modulus), len(sequences)), values.ravel()), 1)
    return counts


@functools.lru_cache(maxsize=8)
def problem_set(
    modulus: int, horizon: int, n_problems: int, min_solutions: int, max_solutions: int, problem_seed: int
) -> dict[str, np.ndarray]:
    """
    The seeded problem set: ``{"train": (n_problems, 2), "test": (n_problems, 2)}`` arrays of
    ``(start, target)`` pairs, disjoint, each with ``min_solutions`` to ``max_solutions``
    valid operation sequences. Deterministic for given arguments.
    """
    counts = _solution_counts(modulus, horizon)
    starts, targets = np.nonzero((counts >= min_solutions) & (counts <= max_solutions))
    if len(starts) < 2 * n_problems:
        raise ValueError(
            f"Only {len(starts)} (start, target) pairs have {min_solutions} to {max_solutions} solutions with "
            f"modulus={modulus} and horizon={horizon}; 2 * n_problems = {2 * n_problems} are needed."
        )
    order = np.random.default_rng(problem_seed).permutation(len(starts))[: 2 * n_problems]
    pairs = np.stack([starts[order], targets[order]], axis=1)
    pairs.setflags(write=False)
    return {"train": pairs[:n_problems], "test": pairs[n_problems:]}


class MultiSolutionEnv(gym.Env[np.ndarray, np.int64]):
    """
    Reach a target number in ``Z_m`` by ``horizon`` arithmetic operations.

    - Actions: ``Discrete(8)``, the operations of :data:`OPERATIONS`
      (``+1, +2, +3, +5, *2, *3, -1, -4``, all modulo ``m``).
    - Observations: ``Box(0, 1, (2 * m + horizon,))``, the one-hot current number,
      the one-hot target and the one-hot step.
    - Reward: 0 on every step but the last, which gives 1 if the number equals the
      target (a verifiable reward). Episodes last exactly ``horizon`` steps;
      ``info["is_success"]`` is set on the last step, ``info["problem"]`` on every step.

    It also has a batched, functional interface (:meth:`batch_reset`,
    :meth:`batch_step`), which :func:`sb3_apo.common.pass_at_k.evaluate_pass_at_k`
    uses to sample many attempts per problem at once.

    :param split: ``"train"`` or ``"test"``, the half of the problem set to draw from
    :param n_problems: the number of problems per split
    :param modulus: ``m``
    :param horizon: the number of operations per episode
    :param min_solutions: the fewest valid operation sequences a problem may have
    :param max_solutions: the most valid operation sequences a problem may have
    :param problem_seed: the seed of the problem set (not of the episodes: those follow ``reset(seed=...)``)
    :param render_mode: ``None``, ``"ansi"`` (a line of text) or ``"rgb_array"`` (three strips of
        ``m`` cells: the current number, the target, the step)
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    observation_space: spaces.Box
    action_space: spaces.Discrete

    def __init__(
        self,
        split: str = "train",
        n_problems: int = 256,
        modulus: int = 64,
        horizon: int = 3,
        min_solutions: int = 2,
        max_solutions: int = 8,
        problem_seed: int = 0,
        render_mode: str | None = None,
    ):
        check_choice("split", split, SPLITS)
        check_range("n_problems", n_problems, 1, integer=True)
        check_range("modulus", modulus, 2, integer=True)
        check_range("horizon", horizon, 1, 6, integer=True)
        check_range("min_solutions", min_solutions, 1, integer=True)
        check_range("max_solutions", max_solutions, min_solutions, integer=True)
        check_range("problem_seed", problem_seed, 0, integer=True)
        check_choice("render_mode", render_mode, [None, *self.metadata["render_modes"]])
        self.split = split
        self.modulus = int(modulus)
        self.horizon = int(horizon)
        self.render_mode = render_mode
        self.problems = problem_set(
            self.modulus, self.horizon, int(n_problems), int(min_solutions), int(max_solutions), int(problem_seed)
        )[split]
        self.n_problems = len(self.problems)
        self.action_space = spaces.Discrete(len(OPERATIONS))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2 * self.modulus + self.horizon,), dtype=np.float32)
        self._state = np.zeros((1, 3), dtype=np.int64)
        self._history: list[int] = []

    # ------------------------------------------------------------------ #
    # The batched, functional interface. A state is an int array (batch, 3):
    # (problem index, current number, step).
    # ------------------------------------------------------------------ #
    def observe(self, state: np.ndarray) -> np.ndarray:
        """The ``(batch, 2 * m + horizon)`` observations of a batch of states."""
        rows = np.arange(len(state))
        obs = np.zeros((len(state), self.observation_space.shape[0]), dtype=np.float32)
        obs[rows, state[:, 1]] = 1.0
        obs[rows, self.modulus + self.problems[state[:, 0], 1]] = 1.0
        obs[rows, 2 * self.modulus + np.minimum(state[:, 2], self.horizon - 1)] = 1.0
        return obs

    def batch_reset(self, problems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """
        Start one episode per entry of ``problems``.

        :param problems: problem indices in ``[0, n_problems)``
        :return: the states and their observations
        """
        problems = np.asarray(problems, dtype=np.int64)
        state = np.stack([problems, self.problems[problems, 0], np.zeros_like(problems)], axis=1)
        return state, self.observe(state)

    def batch_step(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """
        One step of a batch of episodes, none of them over.

        :param state: the states
        :param actions: one operation index per state
        :return: the new states, their observations, the rewards and whether each episode is over
        """
        values = apply_operations(state[:, 1], np.asarray(actions).reshape(len(state)), self.modulus)
        state = np.stack([state[:, 0], values, state[:, 2] + 1], axis=1)
        done = state[:, 2] >= self.horizon
        rewards = (done & (values == self.problems[state[:, 0], 1])).astype(np.float32)
        return state, self.observe(state), rewards, done

    def solutions(self, problem: int) -> list[tuple[int, ...]]:
        """Every valid operation sequence of a problem, as tuples of action indices."""
        start, target = self.problems[problem]
        sequences = np.indices((len(OPERATIONS),) * self.horizon).reshape(self.horizon, -1).T
        values = np.full(len(sequences), start, dtype=np.int64)
        for step in range(self.horizon):
            values = apply_operations(values, sequences[:, step], self.modulus)
        return [tuple(int(action) for action in sequence) for sequence in sequences[values == target]]

    # ------------------------------------------------------------------ #
    # gymnasium.Env
    # ------------------------------------------------------------------ #
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Start an episode on a problem drawn uniformly from the split.

        :param seed: the seed of the episodes' random generator
        :param options: ``{"problem": index}`` to choose the problem
        """
        super().reset(seed=seed)
        if options is not None and options.get("problem") is not None:
            problem = int(options["problem"])
            if not 0 <= problem < self.n_problems:
                raise ValueError(f"`problem` must be in [0, {self.n_problems}), got {problem}.")
        else:
            problem = int(self.np_random.integers(self.n_problems))
        self._state, obs = self.batch_reset(np.array([problem]))
        self._history = []
        return obs[0], {"problem": problem}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state[0, 2] >= self.horizon:
            raise RuntimeError("The episode is over: call reset() first.")
        action = int(np.asarray(action).item())
        if not self.action_space.contains(action):
            raise ValueError(f"Invalid action {action!r}: the actions are 0 to {len(OPERATIONS) - 1}.")
        self._state, obs, rewards, done = self.batch_step(self._state, np.array([action]))
        self._history.append(action)
        info: dict[str, Any] = {"problem": int(self._state[0, 0])}
        if done[0]:
            info["is_success"] = bool(rewards[0] > 0)
        return obs[0], float(rewards[0]), bool(done[0]), False, info

    def render(self) -> str | np.ndarray | None:
        problem, value, step = (int(x) for x in self._state[0])
        start, target = (int(x) for x in self.problems[problem])
        if self.render_mode == "ansi":
            operations = " ".join(OPERATIONS[action][0] for action in self._history) or "(none yet)"
            return f"problem {problem}: {start} -> {target} (mod {self.modulus}); operations {operations}; now {value}"
        if self.render_mode == "rgb_array":
            cell = 8
            image = np.full((3 * cell, self.modulus * cell, 3), 255, dtype=np.uint8)
            for row, (column, color) in enumerate(((value, (40, 40, 200)), (target, (200, 40, 40)))):
                image[row * cell : (row + 1) * cell, column * cell : (column + 1) * cell] = color
            filled = round(self.modulus * cell * min(step, self.horizon) / self.horizon)
            image[2 * cell :, :filled] = (40, 160, 40)
            return image
        return None
