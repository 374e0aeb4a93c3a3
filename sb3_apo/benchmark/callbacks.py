"""
A training callback that records a run's per-update diagnostics and timing.

rl-zoo3 does not write SB3's CSV logs. :class:`DiagnosticsCSVCallback` adds a
CSV output to the model's logger when training starts, so that every value the
algorithm logs (``train/kl``, ``train/ratio_max``, ``train/anchor_ratio_max``,
PPO's keys, ``eval/*`` ...) lands in ``diagnostics.csv``. For on-policy models
it also measures, after every update and on the whole rollout, the same
diagnostics for *any* algorithm, SB3's PPO included, under ``diag/*``:

- ``diag/kl``: mean exact ``KL(pi_old || pi)`` over the rollout's states;
- ``diag/ratio_max``, ``diag/ratio_dev``: largest ratio and mean ``|r - 1|``
  of the executed actions;
- ``diag/anchor_ratio_max``, ``diag/anchor_ratio_dev``: the same over the
  unsampled (anchor) actions, drawn exactly as APO's diagnostics draw them
  (:meth:`sb3_apo.common.distributions.DistributionMath.anchors`);
- ``diag/timesteps``: the timestep at which the measured update happened;
- ``diag/steps_per_s``, ``diag/wall_s``: throughput of the last iteration
  (rollout, update and logging) and time since training started.

The algorithms of this package log the same measurement under ``train/*``
(:class:`sb3_apo.common.diagnostics.UpdateDiagnostics`); ``diag/*`` repeats it
from the callback, so that SB3's PPO, which logs none of it, is measured by
exactly the same procedure as APO.

With rl-zoo3, pass it as a hyperparameter::

    -params "callback:[{'sb3_apo.benchmark.callbacks.DiagnosticsCSVCallback': {'folder': 'out'}}]"
"""

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat, Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_apo.benchmark.files import DIAGNOSTICS_FILE, PROGRESS_FILE, TRAINING_FILE, atomic_write_json
from sb3_apo.common.diagnostics import UpdateDiagnostics
from sb3_apo.common.distributions import DistributionMath, distribution_math

#: Observations per forward pass when measuring the diagnostics.
CHUNK_SIZE = 4096


class DiagnosticsCSVCallback(BaseCallback):
    """
    Write the model's log to ``<folder>/diagnostics.csv``, measure post-update
    diagnostics (``diag/*``), and record progress and timing.

    Files written into ``folder``:

    - ``diagnostics.csv``: SB3's CSV format, one row per logger dump (one per
      iteration), plus a last row after the final update;
    - ``progress.json``: ``timesteps``, ``total_timesteps``, ``elapsed_s``,
      rewritten atomically during training (for progress displays);
    - ``training.json``: at the end, ``timesteps``, ``total_timesteps``,
      ``learn_time_s``, ``steps_per_s`` (timesteps / learn time, evaluation
      included) and ``steps_per_s_median_update`` (median over iterations,
      which the occasional evaluation barely moves).

    :param folder: the folder to write into (created if missing)
    :param measure: whether to measure the ``diag/*`` diagnostics (on-policy models only)
    :param n_anchor_actions: anchor actions drawn per state for ``Box`` actions; ``None``:
        the model's own ``n_anchor_actions`` where it has one, else 2
    :param seed: seed of the generator the anchors are drawn from (never torch's global one,
        so the measurement does not change training)
    :param progress_every_s: least number of seconds between two writes of ``progress.json``
    :param verbose: verbosity level
    """

    def __init__(
        self,
        folder: str,
        measure: bool = True,
        n_anchor_actions: int | None = None,
        seed: int = 0,
        progress_every_s: float = 2.0,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.folder = Path(folder)
        self.measure = measure
        self.n_anchor_actions = n_anchor_actions
        self.seed = seed
        self.progress_every_s = progress_every_s
        self._csv: CSVOutputFormat | None = None
        self._math: DistributionMath | None = None
        self._generator: th.Generator | None = None
        self._snapshot: dict[str, Any] | None = None
        self._finished = False
        self._start_time = 0.0
        self._start_timesteps = 0
        self._total_timesteps = 0
        self._iteration_time = 0.0
        self._iteration_timesteps = 0
        self._last_progress_write = -np.inf
        self._rates: list[float] = []

    # ------------------------------------------------------------------ #
    # Callback events
    # ------------------------------------------------------------------ #
    def _on_training_start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._csv = CSVOutputFormat(str(self.folder / DIAGNOSTICS_FILE))
        old_logger = self.model.logger
        logger = Logger(folder=old_logger.dir, output_formats=[*old_logger.output_formats, self._csv])
        logger.set_level(old_logger.level)
        self.model.set_logger(logger)

        self._total_timesteps = int(self.locals.get("total_timesteps", 0))
        self._start_time = self._iteration_time = time.perf_counter()
        self._start_timesteps = self._iteration_timesteps = self.model.num_timesteps
        if self.measure and isinstance(self.model, OnPolicyAlgorithm):
            try:
                self._math = distribution_math(self.model.action_space)
            except ValueError:
                self._math = None
            self._generator = th.Generator(device=self.model.device)
            self._generator.manual_seed(self.seed)
        self._write_progress(force=True)

    def _on_rollout_start(self) -> None:
        # The update of the previous iteration has just happened.
        now = time.perf_counter()
        steps = self.model.num_timesteps - self._iteration_timesteps
        if steps > 0:
            rate = steps / max(now - self._iteration_time, 1e-9)
            self._rates.append(rate)
            self.logger.record("diag/steps_per_s", rate)
        self.logger.record("diag/wall_s", now - self._start_time)
        self._iteration_time, self._iteration_timesteps = now, self.model.num_timesteps
        self._measure_update()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._write_progress()
        if self._math is not None:
            self._snapshot = self._take_snapshot()

    def _on_training_end(self) -> None:
        if self._finished:  # rl-zoo3 calls on_training_end() a second time on its first callback
            return
        self._finished = True
        now, steps = time.perf_counter(), self.model.num_timesteps - self._iteration_timesteps
        if steps > 0:  # the last iteration, whose update has just ended
            self._rates.append(steps / max(now - self._iteration_time, 1e-9))
            self.logger.record("diag/steps_per_s", self._rates[-1])
        self._measure_update()
        self.logger.record("diag/wall_s", time.perf_counter() - self._start_time)
        # The last update's train/* values were recorded but SB3 never dumps them.
        self.logger.dump(self.model.num_timesteps)
        learn_time = time.perf_counter() - self._start_time
        timesteps = self.model.num_timesteps - self._start_timesteps
        atomic_write_json(
            self.folder / TRAINING_FILE,
            {
                "timesteps": int(self.model.num_timesteps),
                "total_timesteps": self._total_timesteps,
                "learn_time_s": learn_time,
                "steps_per_s": timesteps / max(learn_time, 1e-9),
                "steps_per_s_median_update": statistics.median(self._rates) if self._rates else None,
                "n_iterations": len(self._rates),
            },
        )
        self._write_progress(force=True)
        self._close_csv()

    # ------------------------------------------------------------------ #
    # Helpers
    # ------------------------------------------------------------------ #
    def _close_csv(self) -> None:
        if self._csv is None:
            return
        logger = self.model.logger
        if self._csv in logger.output_formats:
            logger.output_formats = [output for output in logger.output_formats if output is not self._csv]
        self._csv.close()
        self._csv = None

    def _write_progress(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_progress_write < self.progress_every_s:
            return
        self._last_progress_write = now
        atomic_write_json(
            self.folder / PROGRESS_FILE,
            {
                "timesteps": int(self.model.num_timesteps),
                "total_timesteps": self._total_timesteps,
                "elapsed_s": now - self._start_time,
                "pid": os.getpid(),
            },
        )

    def _anchor_count(self) -> int:
        if self.n_anchor_actions is not None:
            return self.n_anchor_actions
        return int(getattr(self.model, "n_anchor_actions", 2))

    def _executed_actions(self, actions: th.Tensor) -> th.Tensor:
        """The executed actions in the form the policy's ``log_prob`` takes, as SB3's PPO passes them."""
        if isinstance(self.model.action_space, spaces.Discrete):
            return actions.long().flatten()
        return actions

    def _chunks(self, snapshot: dict[str, Any]) -> list[tuple[Any, th.Tensor]]:
        """``(observations, actions)`` tensors of the snapshot, in chunks of ``CHUNK_SIZE``."""
        buffer = self.model.rollout_buffer
        observations, actions = snapshot["observations"], snapshot["actions"]
        n_samples = len(actions)
        chunks = []
        for start in range(0, n_samples, CHUNK_SIZE):
            part = slice(start, start + CHUNK_SIZE)
            if isinstance(observations, dict):
                obs: Any = {key: buffer.to_torch(array[part]) for key, array in observations.items()}
            else:
                obs = buffer.to_torch(observations[part])
            chunks.append((obs, buffer.to_torch(actions[part])))
        return chunks

    def _take_snapshot(self) -> dict[str, Any]:
        """``pi_old``: the rollout's observations, actions, distribution parameters and log-probabilities."""
        assert self._math is not None
        buffer = self.model.rollout_buffer
        n_samples = buffer.buffer_size * buffer.n_envs

        def flat(array: np.ndarray) -> np.ndarray:
            return array.reshape(n_samples, *array.shape[2:])

        if isinstance(buffer.observations, dict):
            observations: Any = {key: flat(array) for key, array in buffer.observations.items()}
        else:
            observations = flat(buffer.observations)
        snapshot: dict[str, Any] = {"observations": observations, "actions": flat(buffer.actions)}
        params, log_probs = [], []
        with th.no_grad():
            for obs, actions in self._chunks(snapshot):
                distribution = self.model.policy.get_distribution(obs)
                params.append(self._math.params(distribution).clone())
                log_probs.append(distribution.log_prob(self._executed_actions(actions)))
        snapshot["params"] = th.cat(params)
        snapshot["log_prob"] = th.cat(log_probs)
        snapshot["timesteps"] = self.model.num_timesteps
        return snapshot

    def _measure_update(self) -> None:
        """Record ``diag/*``, comparing the updated policy with the snapshot taken before the update."""
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None or self._math is None:
            return
        assert self._generator is not None
        diagnostics = UpdateDiagnostics()
        start = 0
        with th.no_grad():
            for obs, actions in self._chunks(snapshot):
                end = start + len(actions)
                old_params, old_log_prob = snapshot["params"][start:end], snapshot["log_prob"][start:end]
                start = end
                distribution = self.model.policy.get_distribution(obs)
                diagnostics.add(
                    self._math,
                    old_params,
                    self._math.params(distribution),
                    distribution.log_prob(self._executed_actions(actions)) - old_log_prob,
                    actions,
                    self._anchor_count(),
                    self._generator,
                )
        self.logger.record("diag/timesteps", snapshot["timesteps"])
        for name, value in diagnostics.as_dict().items():
            self.logger.record(f"diag/{name}", value)
