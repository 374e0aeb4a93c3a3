"""
A training callback that records a run's per-update diagnostics and timing.

rl-zoo3 does not write SB3's CSV logs. :class:`DiagnosticsCSVCallback` adds a CSV output
to the model's logger, so that every value the algorithm logs lands in ``diagnostics.csv``,
and records under ``diag/*`` the diagnostics of each update (``kl``, ``ratio_max``,
``ratio_dev``, ``anchor_ratio_max``, ``anchor_ratio_dev``, and ``timesteps``, the update's
timestep) for any on-policy algorithm, measured on the whole rollout by
:func:`sb3_apo.common.diagnostics.measure_update`: the algorithms of this package measure
them in their loop, and the callback copies the loop's values (no second pass); for
others (SB3's ``PPO``), whose buffer keeps no ``pi_old`` parameters, it keeps them when
the rollout ends and measures after the update. ``diag/steps_per_s`` and ``diag/wall_s``
give the throughput of each iteration. With ``checkpoint_freq``, it also writes checkpoints
that the launcher's ``--resume-from`` continues a run from. See ``docs/benchmarks.md``.

With rl-zoo3, pass it as a hyperparameter::

    -params "callback:[{'sb3_apo.benchmark.callbacks.DiagnosticsCSVCallback': {'folder': 'out'}}]"
"""

import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.logger import CSVOutputFormat, Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_apo.benchmark.files import (
    CHECKPOINT_MODEL,
    CHECKPOINT_RECORD,
    CHECKPOINTS_FOLDER,
    DIAGNOSTICS_FILE,
    EVALUATIONS_NPZ,
    PROGRESS_FILE,
    RUNNER_PID_VARIABLE,
    TRAINING_FILE,
    atomic_write_json,
    file_digest,
    fsync_folder,
    read_json,
)
from sb3_apo.common.diagnostics import distribution_params, measure_update
from sb3_apo.common.distributions import DistributionMath, distribution_math
from sb3_apo.common.on_policy import PPOFamilyAlgorithm


class DiagnosticsCSVCallback(BaseCallback):
    """
    Write the model's log to ``<folder>/diagnostics.csv`` (one row per logger dump, plus a last
    row after the final update), record post-update diagnostics (``diag/*``), keep
    ``progress.json`` (timesteps done and total, rewritten atomically during training) and
    write ``training.json`` at the end (timesteps, learn time, ``steps_per_s`` and
    ``steps_per_s_median_update``, the median over iterations, which the occasional
    evaluation barely moves).

    When the grid runner started the process (``SB3_APO_BENCHMARK_RUNNER_PID`` is set) and
    the runner dies, the run stops at its next step, so no orphan writes into the results.

    With ``checkpoint_freq``, at the first iteration boundary (after an update, before the next
    rollout) at or past each multiple of ``checkpoint_freq`` timesteps, it writes
    ``<folder>/checkpoints/<timestep>/``: the model (``model.save``), the VecNormalize statistics
    (``<env>/vecnormalize.pkl``, where rl-zoo3 looks next to a trained agent), the evaluation
    history (the ``EvalCallback``'s ``evaluations.npz``), ``diagnostics.csv`` so far, and last
    ``checkpoint.json`` (the timestep, the files' SHA-256 digests, the timing so far and the values
    logged but not yet written). It is written in a temporary folder renamed at the end, so a
    checkpoint folder is complete or absent; the two latest are kept. When training starts from
    a model at timestep ``t > 0`` (the launcher's ``--resume-from``) and ``checkpoints/<t>/``
    exists, the callback goes on from it: ``diagnostics.csv`` is its rows up to ``t`` (later rows
    are dropped) followed by the new ones, the pending logged values are logged again, and
    ``diag/wall_s``, ``progress.json`` and ``training.json``'s times sum the kept segments (time
    a launch spent past its last checkpoint before it was cut short is not counted).

    A resumed run is not the computation of an uninterrupted one: the random-number streams
    (torch, numpy, the environments) start again from the seed at the resume, the episodes under
    way at the checkpoint are cut, and the rollout after it starts from fresh resets. The model,
    its optimizer, the VecNormalize statistics, ``num_timesteps`` (hence the schedules) and the
    iteration boundaries are those of the checkpoint. SB3's ``time/iterations`` and ``time/fps``
    count from the resume (they are local to one ``learn`` call); ``train/n_updates`` goes on.

    :param folder: the folder to write into (created if missing)
    :param measure: whether to record the ``diag/*`` diagnostics (on-policy models only)
    :param n_anchor_actions: anchor actions drawn per state for ``Box`` actions where the callback
        measures itself; ``None``: the model's own ``diagnostic_anchor_actions`` where it has one, else 2
    :param seed: seed of the generator those anchors are drawn from (never torch's global one,
        so the measurement does not change training)
    :param progress_every_s: least number of seconds between two writes of ``progress.json``
    :param checkpoint_freq: write a checkpoint every this many timesteps (0: never)
    :param verbose: verbosity level
    """

    def __init__(
        self,
        folder: str,
        measure: bool = True,
        n_anchor_actions: int | None = None,
        seed: int = 0,
        progress_every_s: float = 2.0,
        checkpoint_freq: int = 0,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if isinstance(checkpoint_freq, bool) or not isinstance(checkpoint_freq, int) or checkpoint_freq < 0:
            raise ValueError(f"checkpoint_freq must be a whole number of timesteps >= 0 (0: never), got {checkpoint_freq!r}.")
        self.checkpoint_freq = checkpoint_freq
        self.folder = Path(folder)
        self.measure = measure
        self.n_anchor_actions = n_anchor_actions
        self.seed = seed
        self.progress_every_s = progress_every_s
        runner_pid = os.environ.get(RUNNER_PID_VARIABLE)
        self._runner_pid = int(runner_pid) if runner_pid else None
        self._csv: CSVOutputFormat | None = None
        self._math: DistributionMath | None = None
        self._generator: th.Generator | None = None
        self._pi_old: dict[str, Any] | None = None
        self._measured_at = -1
        self._finished = False
        self._start_time = self._iteration_time = 0.0
        self._start_timesteps = self._iteration_timesteps = self._total_timesteps = 0
        self._last_progress_write = -np.inf
        self._rates: list[float] = []
        self._eval_callback: EvalCallback | None = None
        self._next_checkpoint = 0

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
        if self.checkpoint_freq > 0:
            siblings = getattr(self.locals.get("callback"), "callbacks", [])  # the CallbackList this callback is in
            self._eval_callback = next((callback for callback in siblings if isinstance(callback, EvalCallback)), None)
            self._next_checkpoint = (self.model.num_timesteps // self.checkpoint_freq + 1) * self.checkpoint_freq
            self._resume()
        own_loop = isinstance(self.model, PPOFamilyAlgorithm)
        if self.measure and isinstance(self.model, OnPolicyAlgorithm) and not own_loop:
            try:
                self._math = distribution_math(self.model.action_space)
            except ValueError:  # an action space without exact KL: no diag/*
                self._math = None
            self._generator = th.Generator(device=self.model.device)
            self._generator.manual_seed(self.seed)
        self._write_progress(force=True)

    def _on_rollout_start(self) -> None:
        # The update of the previous iteration has just happened.
        now = time.perf_counter()
        steps = self.model.num_timesteps - self._iteration_timesteps
        if steps > 0:
            self._rates.append(steps / max(now - self._iteration_time, 1e-9))
            self.logger.record("diag/steps_per_s", self._rates[-1])
        self.logger.record("diag/wall_s", now - self._start_time)
        self._iteration_time, self._iteration_timesteps = now, self.model.num_timesteps
        self._record_update()
        if self.checkpoint_freq > 0 and self.model.num_timesteps >= self._next_checkpoint:
            self._save_checkpoint()
            self._next_checkpoint = (self.model.num_timesteps // self.checkpoint_freq + 1) * self.checkpoint_freq

    def _on_step(self) -> bool:
        if self._runner_pid is not None and os.getppid() != self._runner_pid:
            print(f"The benchmark runner (pid {self._runner_pid}) is gone; stopping this run.", file=sys.stderr)
            os._exit(1)  # as if killed with the runner: nothing more is written
        return True

    def _on_rollout_end(self) -> None:
        self._write_progress()
        if self._math is not None:
            # pi_old of an algorithm whose buffer does not keep it: the policy has not changed since the rollout.
            assert isinstance(self.model, OnPolicyAlgorithm)  # as _math is set only for one
            buffer = self.model.rollout_buffer

            def flat(array: np.ndarray) -> np.ndarray:
                return array.reshape(-1, *array.shape[2:]).copy()

            observations: Any = buffer.observations
            observations = (
                {k: flat(v) for k, v in observations.items()} if isinstance(observations, dict) else flat(observations)
            )
            self._pi_old = {
                "observations": observations,
                "actions": flat(buffer.actions),
                "old_params": distribution_params(self.model.policy, self._math, observations),
                "old_log_prob": buffer.log_probs.reshape(-1).copy(),
            }

    def _on_training_end(self) -> None:
        if self._finished:  # rl-zoo3 calls on_training_end() a second time on its first callback
            return
        self._finished = True
        now, steps = time.perf_counter(), self.model.num_timesteps - self._iteration_timesteps
        if steps > 0:  # the last iteration, whose update has just ended
            self._rates.append(steps / max(now - self._iteration_time, 1e-9))
            self.logger.record("diag/steps_per_s", self._rates[-1])
        self._record_update()
        self.logger.record("diag/wall_s", time.perf_counter() - self._start_time)
        # The last update's train/* values were recorded but SB3 never dumps them.
        self.logger.dump(self.model.num_timesteps)
        learn_time = time.perf_counter() - self._start_time
        atomic_write_json(
            self.folder / TRAINING_FILE,
            {
                "timesteps": int(self.model.num_timesteps),
                "total_timesteps": self._total_timesteps,
                "learn_time_s": learn_time,
                "steps_per_s": (self.model.num_timesteps - self._start_timesteps) / max(learn_time, 1e-9),
                "steps_per_s_median_update": statistics.median(self._rates) if self._rates else None,
                "n_iterations": len(self._rates),
            },
        )
        self._write_progress(force=True)
        if self._csv is not None:
            logger = self.model.logger
            logger.output_formats = [output for output in logger.output_formats if output is not self._csv]
            self._csv.close()
            self._csv = None

    def _save_checkpoint(self) -> None:
        """Write ``checkpoints/<timestep>/`` in a temporary folder, then rename it; keep the two latest."""
        timesteps = self.model.num_timesteps
        root = self.folder / CHECKPOINTS_FOLDER
        temporary = root / f".{timesteps}.{os.getpid()}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        self.model.save(temporary / CHECKPOINT_MODEL)
        names = [CHECKPOINT_MODEL, DIAGNOSTICS_FILE]
        shutil.copyfile(self.folder / DIAGNOSTICS_FILE, temporary / DIAGNOSTICS_FILE)
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            from huggingface_sb3 import EnvironmentName  # rl-zoo3's name of the env's folder, as the launcher reads it

            env_id = vec_normalize.get_attr("spec", [0])[0].id
            names.append(f"{EnvironmentName(env_id)}/vecnormalize.pkl")
            (temporary / names[-1]).parent.mkdir()
            vec_normalize.save(str(temporary / names[-1]))
        history = self._eval_callback
        if history is not None and history.evaluations_timesteps:
            successes = {"successes": history.evaluations_successes} if history.evaluations_successes else {}
            names.append(EVALUATIONS_NPZ)
            np.savez(
                temporary / EVALUATIONS_NPZ,
                timesteps=history.evaluations_timesteps,
                results=history.evaluations_results,
                ep_lengths=history.evaluations_length,
                **successes,  # type: ignore[arg-type]  # numpy's stub types the keyword arguments as arrays
            )
        for name in names:
            with open(temporary / name, "rb") as file:
                os.fsync(file.fileno())
        pending = self.model.logger  # the values logged since the last dump: the next row after a resume needs them
        record = {
            "timesteps": timesteps,
            "files": {name: file_digest(temporary / name) for name in names},
            "learn_time_s": time.perf_counter() - self._start_time,
            "rates": self._rates,
            "pending_values": dict(pending.name_to_value),
            "pending_excluded": {key: list(value) for key, value in pending.name_to_excluded.items()},
        }
        atomic_write_json(temporary / CHECKPOINT_RECORD, record)
        final = root / str(timesteps)
        shutil.rmtree(final, ignore_errors=True)  # a damaged checkpoint of the same timestep, from before a resume
        os.replace(temporary, final)
        fsync_folder(root)
        for old in sorted((path for path in root.iterdir() if path.name.isdigit()), key=lambda path: int(path.name))[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    def _resume(self) -> None:
        """Go on from ``checkpoints/<timestep>/`` when the model starts there (see the class docstring)."""
        timesteps = self.model.num_timesteps
        root = self.folder / CHECKPOINTS_FOLDER
        for path in root.iterdir() if root.is_dir() else ():
            # temporary folders of a launch killed while writing, and checkpoints of a lost future
            if not path.name.isdigit() or int(path.name) > timesteps:
                shutil.rmtree(path, ignore_errors=True)
        checkpoint = root / str(timesteps)
        if timesteps == 0 or not (checkpoint / CHECKPOINT_RECORD).is_file():
            return
        record = read_json(checkpoint / CHECKPOINT_RECORD)
        assert self._csv is not None  # opened by _on_training_start
        rows = (checkpoint / DIAGNOSTICS_FILE).read_text(encoding="utf-8")
        self._csv.file.write(rows)  # the rows up to the checkpoint, in the file CSVOutputFormat has just emptied
        self._csv.file.flush()
        self._csv.keys = rows.partition("\n")[0].split(",") if rows else []
        self._start_time -= record["learn_time_s"]
        self._start_timesteps = 0
        self._rates = list(record["rates"])
        self._measured_at = timesteps  # the last update's diagnostics are among the pending values
        for key, value in record["pending_values"].items():
            excluded = tuple(record["pending_excluded"].get(key, ()))
            self.logger.record(key, float("nan") if value is None else value, exclude=excluded or None)

    def _write_progress(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_progress_write < self.progress_every_s:
            return
        self._last_progress_write = now
        progress = {"timesteps": int(self.model.num_timesteps), "total_timesteps": self._total_timesteps}
        atomic_write_json(self.folder / PROGRESS_FILE, {**progress, "elapsed_s": now - self._start_time, "pid": os.getpid()})

    def _record_update(self) -> None:
        """Record ``diag/*`` of the update that has just ended, if it was measured and not recorded yet."""
        if not self.measure or self._measured_at == self.model.num_timesteps:
            return
        values = None
        if isinstance(self.model, PPOFamilyAlgorithm):
            values = self.model.last_diagnostics  # what the loop measured (None: not this update)
        elif self._pi_old is not None and self._math is not None:
            assert self._generator is not None and isinstance(self.model, OnPolicyAlgorithm)  # as _pi_old is set for one
            anchors = self.n_anchor_actions or int(getattr(self.model, "diagnostic_anchor_actions", 2))
            values = measure_update(
                self.model.policy, self._math, **self._pi_old, n_anchor_actions=anchors, generator=self._generator
            )
        self._pi_old = None
        if values is None:
            return
        self._measured_at = self.model.num_timesteps
        self.logger.record("diag/timesteps", self.model.num_timesteps)
        for name, value in values.items():
            self.logger.record(f"diag/{name}", value)
