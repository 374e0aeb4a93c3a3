"""
The speed benchmark: training steps per second of several contenders on the same env,
measured in one process, interleaved over several rounds, each reported as a ratio to SB3's
PPO in the same round; the bare environment's step rate (the same vectorised env with random
actions, and a single unwrapped ``gym.make`` env) is the ceiling.

A contender is ``algo`` or ``algo:key=value,...`` (the grid's variant syntax, with the
algorithm as the name), e.g. ``apo``, ``apo:diagnostics_freq=10`` or ``ppo``. rl-zoo3's
``ExperimentManager`` builds each model and its env from a hyperparameter file, as the
launcher does: ``<hyperparams_dir>/<algo>.yml``, by default the project's files (for
``ppo`` too), the overrides applied as ``-params`` would apply them, but for ``vec_env=subproc``,
which is rl-zoo3's ``--vec-env subproc`` (each env in its own process). ``--overrides`` applies
the same overrides to every model, the reference too: ``learning_rate=1e-12`` keeps every policy
at its initial weights (Adam's steps of 1e-12 are below float32's resolution of the weights), so
that every contender steps the env in the same state distribution and the ratios measure the
algorithms' own costs, not the cost of the states their policies reach.
"""

import argparse
import difflib
import gc
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch as th
from filelock import FileLock, Timeout
from scipy import stats
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_apo.benchmark.files import atomic_write_json
from sb3_apo.benchmark.grid import parse_overrides
from sb3_apo.zoo.masking import recorded_command

#: The reference every rate is divided by: SB3's PPO, without overrides.
REFERENCE = "ppo"
#: Names of the two environment-only measurements.
VEC_ENV = "env: same VecEnv, random actions"
RAW_ENV = "env: one gym.make env, random actions"
#: The files a finished measurement leaves in ``--out``.
OUTPUT_FILES = ("speed.md", "speed.json", "speed_summary.csv", "speed.csv", "command.txt")
#: The lock file that a measurement holds in ``--out`` from its start to its end (one measurement per folder).
LOCK_FILE = ".speed.lock"


@dataclass
class Contender:
    """
    Something whose step rate is measured.

    :param name: its name in the table
    :param step: runs about ``n`` environment steps; returns the number of steps done
    :param settings: the hyperparameters it was built with, as text (empty for the envs)
    :param phase_cpu_s: for a model, the process CPU seconds spent so far in each phase of ``learn()``
        (``rollout``: ``collect_rollouts()``, ``update``: ``train()``); empty for the envs
    """

    name: str
    step: Callable[[int], int]
    settings: str = ""
    phase_cpu_s: dict[str, float] = field(default_factory=dict)


def parse_contender(contender: str) -> tuple[str, str, dict[str, Any]]:
    """
    Read a contender as rl-zoo3 reads ``-params``, without building anything.

    :param contender: ``algo`` or ``algo:key=value,...``; the key ``vec_env`` (``dummy`` or ``subproc``) is
        rl-zoo3's ``--vec-env``, not a hyperparameter
    :return: the algorithm, the ``VecEnv`` class name and the hyperparameter overrides (values evaluated)
    :raises ValueError: for an unknown algorithm, a malformed contender or a value that is not a Python expression
    """
    from rl_zoo3.utils import ALGOS, StoreDict

    from sb3_apo.zoo.registry import register_algorithms

    register_algorithms()
    algo, params = parse_overrides(contender)
    vec_env_type = dict(params).get("vec_env", "dummy")
    params = tuple((key, value) for key, value in params if key != "vec_env")
    if vec_env_type not in ("dummy", "subproc"):
        raise ValueError(f"`vec_env` must be 'dummy' or 'subproc' in contender {contender!r}, got {vec_env_type!r}.")
    if algo not in ALGOS:
        raise ValueError(f"Unknown algorithm {algo!r} in contender {contender!r}; known: {', '.join(sorted(ALGOS))}.")
    parser = argparse.ArgumentParser()
    parser.add_argument("-params", nargs="*", action=StoreDict, default={})
    try:  # rl-zoo3's StoreDict evaluates each value as a Python expression
        overrides = parser.parse_args(["-params", *(f"{key}:{value}" for key, value in params)]).params
    except Exception as error:
        raise ValueError(
            f"Bad overrides in contender {contender!r}: {type(error).__name__}: {error}; a value is a Python expression "
            "(strings in quotes: anchor_mode='parity')."
        ) from error
    return algo, vec_env_type, overrides


def build_model(
    contender: str, env_id: str, hyperparams_dir: Path | None, log_folder: str, seed: int, device: str
) -> tuple[BaseAlgorithm, Any, dict[str, Any]]:
    """
    Build a contender's model and env with the launcher's ``ZooExperimentManager`` (rl-zoo3's ``ExperimentManager``).

    :param contender: ``algo`` or ``algo:key=value,...``; the key ``vec_env`` (``dummy`` or ``subproc``) is
        rl-zoo3's ``--vec-env``, the class of the training ``VecEnv``, not a hyperparameter
    :param env_id: the environment id
    :param hyperparams_dir: the folder of ``<algo>.yml`` files (``None``: the project's files, else rl-zoo3's)
    :param log_folder: a scratch folder for rl-zoo3's files
    :param seed: the seed of the model and its envs
    :param device: the torch device
    :return: the model, its experiment manager and the hyperparameters it was built with
    :raises ValueError: for an unknown algorithm, a malformed contender or an env missing from the file
    """
    from sb3_apo.zoo.exp_manager import ZooExperimentManager
    from sb3_apo.zoo.registry import default_hyperparams_file

    algo, vec_env_type, overrides = parse_contender(contender)
    config = hyperparams_dir / f"{algo}.yml" if hyperparams_dir is not None else default_hyperparams_file(algo)
    # the launcher's manager: its envs carry their recipe, from which Ray actors build theirs
    manager = ZooExperimentManager(
        argparse.Namespace(),
        algo,
        env_id,
        log_folder,
        hyperparams=overrides,
        n_timesteps=1,  # unused: the benchmark calls learn() itself
        eval_freq=-1,
        seed=seed,
        verbose=0,
        device=device,
        config=None if config is None else str(config),
        vec_env_type=vec_env_type,
    )
    model, saved = manager.setup_experiment()  # type: ignore[misc]
    return model, manager, {**saved, **overrides, **({"vec_env": vec_env_type} if vec_env_type != "dummy" else {})}


def check_env_id(env_id: str) -> None:
    """
    Refuse an environment id that is not registered (after rl-zoo3's own registrations), as rl-zoo3's ``train`` does.

    :param env_id: the environment id
    :raises ValueError: naming the id and the closest registered ones
    """
    import rl_zoo3.import_envs  # noqa: F401  (registers rl-zoo3's own environments)

    import sb3_apo.envs  # noqa: F401  (registers the package's environments)

    if env_id not in gym.envs.registry:
        close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; give a registered gymnasium id, e.g. Hopper-v5."
        raise ValueError(f"Unknown environment {env_id!r} (--env){hint}")


@contextmanager
def locked_output(out: Path | None, overwrite: bool) -> Iterator[None]:
    """
    Hold ``out`` for one measurement from its start to its end, so that a second measurement into
    the same folder stops at once instead of overwriting the first one's results when it ends.

    :param out: the output folder (``None``: nothing to hold)
    :param overwrite: replace the results of a finished measurement in ``out``
    :raises ValueError: when ``out`` is a file, or cannot be created
    :raises FileExistsError: when another measurement holds ``out``, or ``out`` holds finished results and
        ``overwrite`` is not set
    """
    if out is None:
        yield
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (it is created if missing).")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / LOCK_FILE).touch()
    except OSError as error:
        raise ValueError(f"Cannot write in --out {out}: {error.strerror or error}.") from error
    lock = FileLock(out / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout as error:
        raise FileExistsError(f"Another speed measurement is writing to {out}; give another --out.") from error
    try:
        finished = [name for name in OUTPUT_FILES if (out / name).exists()]
        if finished and not overwrite:
            raise FileExistsError(
                f"{out} holds the results of a finished measurement ({', '.join(finished)}); give --overwrite."
            )
        yield
    finally:
        lock.release()


def with_overrides(contender: str, overrides: str) -> str:
    """
    A contender with ``overrides`` (``key=value,...``) added to its own, which win where both set a key.

    :param contender: ``algo`` or ``algo:key=value,...``
    :param overrides: ``key=value,...`` or empty
    :raises ValueError: on malformed overrides
    """
    if not overrides:
        return contender
    algo, own = parse_overrides(contender)
    merged = {**dict(parse_overrides(f"{algo}:{overrides}")[1]), **dict(own)}
    return f"{algo}:" + ",".join(f"{key}={value}" for key, value in merged.items())


def model_contender(name: str, model: BaseAlgorithm, settings: dict[str, Any]) -> Contender:
    """
    Training steps of a model: ``learn()`` continued for ``n`` more steps (whole rollouts).

    :param name: its name in the table
    :param model: the model
    :param settings: the hyperparameters it was built with
    """

    phase_cpu_s = {"rollout": 0.0, "update": 0.0}

    def timed(phase: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                phase_cpu_s[phase] += time.process_time() - start

        return call

    # instance attributes shadow the methods that learn() calls (with async rollouts, collect_rollouts()
    # is the learner's side: receiving the rollout; the actor's CPU is another process's)
    model.collect_rollouts = timed("rollout", model.collect_rollouts)  # type: ignore[method-assign]
    model.train = timed("update", model.train)  # type: ignore[method-assign]

    def step(n: int) -> int:
        before = model.num_timesteps
        model.learn(n, reset_num_timesteps=before == 0)
        return model.num_timesteps - before

    settings_text = ", ".join(f"{key}={value}" for key, value in settings.items() if key != "n_timesteps")
    return Contender(name, step, settings_text, phase_cpu_s)


def env_contender(name: str, env: VecEnv, seed: int) -> Contender:
    """
    Steps of a vectorised env (the one a model trains on) with random actions drawn beforehand.

    :param name: its name in the table
    :param env: the env
    :param seed: seed of the action draws
    """
    env.reset()
    env.action_space.seed(seed)
    actions = np.stack([np.stack([env.action_space.sample() for _ in range(env.num_envs)]) for _ in range(256)])

    def step(n: int) -> int:
        calls = max(n // env.num_envs, 1)
        for index in range(calls):
            env.step(actions[index % len(actions)])
        return calls * env.num_envs

    return Contender(name, step)


def raw_env_contender(env_id: str, seed: int) -> Contender:
    """
    Steps of one ``gym.make`` env with random actions drawn beforehand, resetting at episode ends.

    :param env_id: the environment id
    :param seed: seed of the env and the action draws
    """
    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(1024)]

    def step(n: int) -> int:
        for index in range(n):
            _, _, terminated, truncated, _ = env.step(actions[index % len(actions)])
            if terminated or truncated:
                env.reset()
        return n

    return Contender(RAW_ENV, step)


def rate_ratio(
    steps: np.ndarray, wall_s: np.ndarray, reference_steps: np.ndarray, reference_wall_s: np.ndarray, axis: int = -1
) -> np.ndarray:
    """
    A contender's step rate over all rounds (its steps over its time, summed over rounds) divided by
    the reference's: the ratio of their steps/s over the whole measurement. It lacks the upward bias
    of the mean of per-round ratios, which exceeds it by about their variance when rounds are short
    and noisy.

    :param steps: the contender's steps, one per round (along ``axis``)
    :param wall_s: the contender's seconds, one per round
    :param reference_steps: the reference's steps in the same rounds
    :param reference_wall_s: the reference's seconds in the same rounds
    :param axis: the axis of rounds (``scipy.stats.bootstrap`` passes resamples along the last)
    """
    rate = steps.sum(axis=axis) / wall_s.sum(axis=axis)
    return rate / (reference_steps.sum(axis=axis) / reference_wall_s.sum(axis=axis))


def rate_ratio_interval(
    steps: np.ndarray, wall_s: np.ndarray, reference_steps: np.ndarray, reference_wall_s: np.ndarray
) -> tuple[float, float]:
    """
    95% interval of :func:`rate_ratio`: BCa bootstrap over rounds, the contender and the reference
    resampled together (``paired``), 10,000 resamples, seed 0; ``nan`` with fewer than 3 rounds.
    """
    if len(steps) < 3:
        return np.nan, np.nan
    samples = (steps, wall_s, reference_steps, reference_wall_s)
    interval = stats.bootstrap(
        samples, rate_ratio, paired=True, n_resamples=10_000, batch=1000, method="BCa", random_state=0
    ).confidence_interval
    return float(interval.low), float(interval.high)


def summarise(measurements: pd.DataFrame, reference: str) -> pd.DataFrame:
    """
    Per contender: median, min and max steps/s; its step rate over all rounds divided by the
    reference's (:func:`rate_ratio`, with its 95% interval); its ratio to the reference in the same
    round (mean, std, min, max) by wall time, and by process CPU time (mean, std); for the models,
    the median process CPU milliseconds per 1,000 steps of each phase (rollout and update).

    :param measurements: one row per (round, contender)
    :param reference: the contender every rate is divided by
    """
    names = list(dict.fromkeys(measurements["contender"]))

    def per_round(values: str) -> pd.DataFrame:
        return measurements.pivot(index="round", columns="contender", values=values)[names]

    steps, wall_s, rates = per_round("steps"), per_round("wall_s"), per_round("steps_per_s")
    ratios = rates.div(rates[reference], axis=0)
    cpu = per_round("steps_per_cpu_s")
    cpu_ratios = cpu.div(cpu[reference], axis=0)
    # rate_ratio's arguments per contender: its steps and seconds per round, then the reference's
    pairs = {
        name: [frame[column].to_numpy(dtype=float) for column in (name, reference) for frame in (steps, wall_s)]
        for name in names
    }
    intervals = [rate_ratio_interval(*pairs[name]) if name != reference else (1.0, 1.0) for name in names]
    table = pd.DataFrame(
        {
            "steps_per_s_median": rates.median(),
            "steps_per_s_min": rates.min(),
            "steps_per_s_max": rates.max(),
            "rate_ratio": [float(rate_ratio(*pairs[name])) for name in names],
            "rate_ratio_low": [low for low, _ in intervals],
            "rate_ratio_high": [high for _, high in intervals],
            "ratio_mean": ratios.mean(),
            "ratio_std": ratios.std(),
            "ratio_min": ratios.min(),
            "ratio_max": ratios.max(),
            "cpu_ratio_mean": cpu_ratios.mean(),
            "cpu_ratio_std": cpu_ratios.std(),
        },
        index=names,
    )
    for phase in ("rollout", "update"):
        per_step = measurements[f"{phase}_cpu_s"] * 1e6 / measurements["steps"]  # ms per 1,000 steps
        table[f"{phase}_cpu_ms_per_1k_steps"] = per_step.groupby(measurements["contender"]).median()
    return table.rename_axis("contender").reset_index()


def run_speed(
    env_id: str = "Hopper-v5",
    contenders: Sequence[str] = ("apo", "ppo_penalty", "spo", "ppo"),
    rounds: int = 200,
    steps_per_round: int | None = None,
    warmup_steps: int = 4096,
    hyperparams_dir: Path | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "cpu",
    threads: int = 1,
    overrides: str = "",
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """
    Measure and compare training step rates, and write ``speed.md``, ``speed.json``,
    ``speed_summary.csv`` and ``speed.csv`` (one row per measurement) into ``out``.

    :param env_id: the environment id
    :param contenders: ``algo`` or ``algo:key=value,...``; ``ppo`` (the reference) is added if missing
    :param rounds: measured rounds; every contender runs once per round, in an order rotated each round
    :param steps_per_round: environment steps per contender and round (``None``: one rollout of the
        reference, ``n_steps * n_envs``, so that a contender and the reference run seconds apart and the
        host's changes of speed cancel in their ratio)
    :param warmup_steps: steps per contender before the measured rounds (not counted)
    :param hyperparams_dir: a folder of ``<algo>.yml`` files (default: the project's)
    :param out: the output folder (``None``: write nothing)
    :param overwrite: replace the results of a finished measurement in ``out``
    :param seed: the seed of models and envs
    :param device: the torch device of the models
    :param threads: torch threads (set before building anything)
    :param overrides: ``key=value,...`` applied to every model contender, the reference too (the contender's
        own override of the same key wins)
    :param command: the command line to record
    :param log: where progress lines go
    :return: the summary: settings and one row per contender
    :raises ValueError: on bad settings, an unknown environment or a bad contender, or an ``out`` that is a file
    :raises FileExistsError: when another measurement holds ``out``, or ``out`` holds finished results and
        ``overwrite`` is not set
    """
    if rounds < 1 or (steps_per_round is not None and steps_per_round < 1) or warmup_steps < 0 or threads < 1:
        raise ValueError(
            "`rounds` must be at least 1, `steps_per_round` at least 1 (or None: one rollout of the reference), "
            f"`warmup_steps` at least 0 and `threads` at least 1; got rounds={rounds}, steps_per_round={steps_per_round}, "
            f"warmup_steps={warmup_steps}, threads={threads}"
        )
    check_env_id(env_id)
    for contender in dict.fromkeys([*contenders, REFERENCE]):  # every contender is read before the first one is built
        parse_contender(with_overrides(contender, overrides))
    with locked_output(out, overwrite):
        return _measure(
            env_id,
            contenders,
            rounds,
            steps_per_round,
            warmup_steps,
            hyperparams_dir,
            out,
            seed,
            device,
            threads,
            overrides,
            command,
            log,
        )


def _measure(
    env_id: str,
    contenders: Sequence[str],
    rounds: int,
    steps_per_round: int | None,
    warmup_steps: int,
    hyperparams_dir: Path | None,
    out: Path | None,
    seed: int,
    device: str,
    threads: int,
    overrides: str,
    command: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """:func:`run_speed` once its settings are checked and ``out`` is held."""
    names = list(dict.fromkeys([*contenders, REFERENCE]))
    th.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as scratch:
        built = {
            name: build_model(with_overrides(name, overrides), env_id, hyperparams_dir, scratch, seed, device)
            for name in names
        }
        measured = [model_contender(name, model, settings) for name, (model, _, settings) in built.items()]
        reference, manager = built[REFERENCE][:2]
        if steps_per_round is None:
            steps_per_round = reference.n_steps * reference.n_envs  # type: ignore[attr-defined]
        measured.append(env_contender(VEC_ENV, manager.create_envs(manager.n_envs, no_log=True), seed))
        measured.append(raw_env_contender(env_id, seed))
        load_before = os.getloadavg()
        log(f"warm-up: {warmup_steps} steps each")
        for contender in measured:
            if warmup_steps > 0:
                contender.step(warmup_steps)
        rows = []
        for round_index in range(rounds):
            shift = round_index % len(measured)
            for contender in measured[shift:] + measured[:shift]:
                gc.collect()
                phases_before = dict(contender.phase_cpu_s)
                wall, cpu = time.perf_counter(), time.process_time()
                steps = contender.step(steps_per_round)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                phases = {f"{phase}_cpu_s": contender.phase_cpu_s[phase] - phases_before[phase] for phase in phases_before}
                rows.append(
                    {
                        "round": round_index,
                        "contender": contender.name,
                        "steps": steps,
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "steps_per_s": steps / wall,
                        "steps_per_cpu_s": steps / cpu if cpu > 0 else np.nan,
                        "rollout_cpu_s": phases.get("rollout_cpu_s", np.nan),
                        "update_cpu_s": phases.get("update_cpu_s", np.nan),
                    }
                )
            log(
                f"round {round_index + 1}/{rounds}: "
                + ", ".join(f"{r['contender']} {r['steps_per_s']:,.0f}/s" for r in rows[-len(measured) :])
            )
    measurements = pd.DataFrame(rows)
    summary = {
        "env": env_id,
        "rounds": rounds,
        "steps_per_round": steps_per_round,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "device": device,
        "torch_threads": threads,
        "overrides": overrides,
        "settings_source": str(hyperparams_dir) if hyperparams_dir else "the project's hyperparameter files",
        "settings": {contender.name: contender.settings for contender in measured if contender.settings},
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "python": platform.python_version(),
        "torch": th.__version__,
        "command": command,
        "rows": summarise(measurements, REFERENCE).to_dict("records"),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.md").write_text(markdown(summary), encoding="utf-8")
        atomic_write_json(out / "speed.json", summary)
        pd.DataFrame(summary["rows"]).to_csv(out / "speed_summary.csv", index=False)
        measurements.to_csv(out / "speed.csv", index=False)
        (out / "command.txt").write_text(command + "\n", encoding="utf-8")
    log(markdown(summary))
    return summary


def _milliseconds(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else ""


def markdown(summary: dict[str, Any]) -> str:
    """
    The speed table in Markdown, with the settings it was measured with.

    :param summary: what :func:`run_speed` returns
    """
    rows = pd.DataFrame(summary["rows"])

    def ratio(mean: pd.Series, std: pd.Series) -> list[str]:
        return [f"{m:.3f}" + (f" ± {s:.3f}" if np.isfinite(s) else "") for m, s in zip(mean, std)]

    table = pd.DataFrame(
        {
            "contender": rows["contender"],
            "steps/s (median)": rows["steps_per_s_median"].map("{:,.0f}".format),
            "rate over all rounds / PPO's [95% interval]": [
                f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) else "")
                for value, low, high in zip(rows["rate_ratio"], rows["rate_ratio_low"], rows["rate_ratio_high"])
            ],
            "ratio to PPO per round": ratio(rows["ratio_mean"], rows["ratio_std"]),
            "min-max": [f"{low:.3f}-{high:.3f}" for low, high in zip(rows["ratio_min"], rows["ratio_max"])],
            "ratio to PPO by CPU time": ratio(rows["cpu_ratio_mean"], rows["cpu_ratio_std"]),
            "CPU ms / 1k steps: rollout": rows["rollout_cpu_ms_per_1k_steps"].map(_milliseconds),
            "update": rows["update_cpu_ms_per_1k_steps"].map(_milliseconds),
        }
    )
    load_before = ", ".join(f"{value:.2f}" for value in summary["load_average_before"])
    load_after = ", ".join(f"{value:.2f}" for value in summary["load_average_after"])
    lines = [
        f"# Training speed on {summary['env']}",
        "",
        f"Steps per second of training (rollout + update, `learn()`), {summary['rounds']} interleaved rounds of "
        f"{summary['steps_per_round']:,} steps per contender after {summary['warmup_steps']:,} warm-up steps, in one "
        f"process, {summary['torch_threads']} torch thread(s), device {summary['device']}. Rate over all rounds: "
        "the contender's steps over its seconds, summed over the rounds, divided by SB3 PPO's, with a 95% BCa "
        "bootstrap interval over rounds (paired). Ratio per round: to SB3 PPO's rate in the same round, "
        "mean ± sample std (min-max) over rounds; by CPU time: the same with process CPU time. "
        "The two `env` rows are the ceiling. CPU ms / 1k steps: "
        "the learner process's median CPU time per 1,000 steps in `collect_rollouts()` and in `train()` (with "
        "asynchronous rollouts, the actor's CPU is another process's and is not counted).",
        "",
        table.to_markdown(index=False),
        "",
        f"Settings ({summary['settings_source']}):",
        "",
        *(f"- `{name}`: {text}" for name, text in summary["settings"].items()),
        "",
        f"Machine: {summary['cpu']}, {summary['cpu_count']} CPUs; load average before {load_before}, after "
        f"{load_after}; Python {summary['python']}, torch {summary['torch']}.",
        *(["", f"Overrides of every model: `{summary['overrides']}`."] if summary.get("overrides") else []),
        "",
        f"Command: `{summary['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """
    ``python benchmarks/speed.py``: measure and write the speed table.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status
    """
    parser = argparse.ArgumentParser(description="Training steps/s of algorithms (and variants) as ratios to SB3's PPO.")
    parser.add_argument("--env", default="Hopper-v5", help="environment id (default: Hopper-v5)")
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=["apo", "ppo_penalty", "spo", "ppo"],
        metavar="ALGO[:key=value,...]",
        help="algorithms, each with optional overrides, e.g. apo:diagnostics_freq=10 (default: apo ppo_penalty spo ppo)",
    )
    parser.add_argument("--rounds", type=int, default=200, help="interleaved measured rounds (default: 200)")
    parser.add_argument(
        "--steps-per-round",
        type=int,
        default=None,
        help="steps per contender and round (default: one rollout of the reference, n_steps * n_envs)",
    )
    parser.add_argument("--warmup-steps", type=int, default=4096, help="unmeasured steps per contender first")
    parser.add_argument("--hyperparams-dir", type=Path, default=None, help="DIR/<algo>.yml files (default: the project's)")
    parser.add_argument("--out", type=Path, default=None, help="output folder for speed.md/.csv/.json")
    parser.add_argument("--overwrite", action="store_true", help="replace the finished results in --out")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument(
        "--overrides",
        default="",
        metavar="key=value,...",
        help="overrides of every model, the reference too, e.g. learning_rate=1e-12 (every policy stays at its "
        "initial weights, so that all contenders step the same states)",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        run_speed(
            env_id=args.env,
            contenders=args.contenders,
            rounds=args.rounds,
            steps_per_round=args.steps_per_round,
            warmup_steps=args.warmup_steps,
            hyperparams_dir=args.hyperparams_dir,
            out=args.out,
            overwrite=args.overwrite,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            overrides=args.overrides,
            command=shlex.join(recorded_command(["python", "benchmarks/speed.py", *argv])),
        )
    except (ValueError, FileExistsError) as error:  # bad settings or contenders, --out held or with finished results
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
