"""
The speed benchmark: training steps per second of APO, PPOPenalty, SPO and SB3's
PPO on the same env and settings, measured in one process, interleaved over
several rounds, each reported as a ratio to PPO in the same round; the bare
environment's step rate (the same vectorised env with random actions, and a
single unwrapped ``gym.make`` env) is the upper bound.

The default settings are the APO paper's MuJoCo settings (8 envs x 256 steps,
minibatches of 512, 10 epochs, separate 64-64 tanh actor and critic, Adam eps
1e-5, observation and reward normalisation); ``--hyperparams-dir`` builds each
model from a hyperparameter file in rl-zoo3's format instead.
"""

import gc
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_apo import APO, SPO, PPOPenalty
from sb3_apo.benchmark.files import to_json, write_csv

#: The algorithms the benchmark knows, by launcher name.
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"apo": APO, "ppo_penalty": PPOPenalty, "spo": SPO, "ppo": PPO}
#: The reference every rate is divided by.
REFERENCE = "ppo"
#: Names of the two environment-only measurements.
VEC_ENV = "env: same VecEnv, random actions"
RAW_ENV = "env: one gym.make env, random actions"
#: Hyperparameter-file keys that the speed benchmark cannot reproduce in-process.
UNSUPPORTED_KEYS = ("env_wrapper", "vec_env_wrapper", "frame_stack")


def paper_settings(algo: str) -> dict[str, Any]:
    """
    The APO paper's MuJoCo settings, as constructor keyword arguments plus ``n_envs`` and ``normalize``
    (the same as the project's MuJoCo v5 YAML entries).

    :param algo: the algorithm: ``clip_range`` 0.2 is set for the clipped objectives, not for
        PPOPenalty, which keeps its default (no clipping)
    """
    clipping = {} if algo == "ppo_penalty" else {"clip_range": 0.2}
    return {
        **clipping,
        "n_envs": 8,
        "normalize": {"norm_obs": True, "norm_reward": True, "clip_obs": 10.0, "clip_reward": 10.0},
        "policy": "MlpPolicy",
        "n_steps": 256,
        "batch_size": 512,
        "n_epochs": 10,
        "learning_rate": LinearSchedule(3e-4, 0.0, 1.0),
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range_vf": 0.2,
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "policy_kwargs": {
            "net_arch": {"pi": [64, 64], "vf": [64, 64]},
            "activation_fn": th.nn.Tanh,
            "log_std_init": 0.0,
            "ortho_init": True,
            "optimizer_kwargs": {"eps": 1e-5},
        },
    }


def _schedule(value: Any) -> Any:
    """rl-zoo3's ``lin_<value>`` strings as a linear schedule; other values unchanged."""
    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[len("lin_") :]), 0.0, 1.0)
    return value


def settings_from_yaml(path: Path, env_id: str) -> dict[str, Any]:
    """
    A hyperparameter file's entry for ``env_id`` (else its ``default``), turned into
    :func:`paper_settings`'s form, as rl-zoo3 would read it.

    :param path: the ``<algo>.yml`` file
    :param env_id: the environment id
    :raises KeyError: when the file has neither the env nor ``default``
    :raises ValueError: for keys the benchmark cannot reproduce (wrappers, frame stacking)
    """
    import yaml

    with open(path, encoding="utf-8") as file:
        entries = yaml.safe_load(file)
    if env_id not in entries and "default" not in entries:
        raise KeyError(f"{path} has no entry for {env_id} and no default.")
    raw = dict(entries.get(env_id, entries.get("default")))
    unsupported = [key for key in UNSUPPORTED_KEYS if key in raw]
    if unsupported:
        raise ValueError(f"{path}: {env_id} uses {', '.join(unsupported)}, which the speed benchmark does not reproduce.")
    for key in ("n_timesteps", "callback", "monitor_kwargs"):
        raw.pop(key, None)
    settings: dict[str, Any] = {"n_envs": int(raw.pop("n_envs", 1))}
    normalize = raw.pop("normalize", False)
    if isinstance(normalize, str):
        normalize = eval(normalize, {"dict": dict})  # rl-zoo3 evaluates this key as Python too
    if normalize:
        settings["normalize"] = dict(normalize) if isinstance(normalize, dict) else {}
    if isinstance(raw.get("policy_kwargs"), str):
        # rl-zoo3 evaluates this key as Python, with torch's nn in scope
        raw["policy_kwargs"] = eval(raw["policy_kwargs"], {"dict": dict, "nn": th.nn, "th": th})
    if "env_kwargs" in raw:
        settings["env_kwargs"] = raw.pop("env_kwargs")
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        if key in raw:
            raw[key] = _schedule(raw[key])
    settings.update(raw)
    return settings


def make_env(env_id: str, settings: dict[str, Any], seed: int) -> VecEnv:
    """
    The vectorised env a model trains on: ``n_envs`` copies in a ``DummyVecEnv``, with ``Monitor``
    (as rl-zoo3 builds it) and ``VecNormalize`` where ``settings`` asks for it.

    :param env_id: the environment id
    :param settings: see :func:`paper_settings`
    :param seed: the seed of the envs
    """
    env = make_vec_env(env_id, n_envs=settings["n_envs"], seed=seed, env_kwargs=settings.get("env_kwargs"))
    if "normalize" in settings:
        kwargs = dict(settings["normalize"])
        if "gamma" in settings:  # as rl-zoo3 does: the algorithm's discount for the return normalisation
            kwargs["gamma"] = settings["gamma"]
        env = VecNormalize(env, **kwargs)
    return env


def make_model(algo: str, env_id: str, settings: dict[str, Any], seed: int, device: str) -> BaseAlgorithm:
    """
    Build a model on its own env.

    :param algo: a key of :data:`ALGORITHMS`
    :param env_id: the environment id
    :param settings: see :func:`paper_settings`
    :param seed: the seed of the model and its envs
    :param device: the torch device
    """
    kwargs = {key: value for key, value in settings.items() if key not in ("n_envs", "normalize", "env_kwargs", "policy")}
    return ALGORITHMS[algo](
        settings.get("policy", "MlpPolicy"), make_env(env_id, settings, seed), seed=seed, device=device, verbose=0, **kwargs
    )


@dataclass
class Contender:
    """
    Something whose step rate is measured.

    :param name: its name in the table
    :param step: runs about ``n`` environment steps; returns the number of steps done
    """

    name: str
    step: Callable[[int], int]


def model_contender(name: str, model: BaseAlgorithm) -> Contender:
    """
    Training steps of a model: ``learn()`` continued for ``n`` more steps (whole rollouts).

    :param name: its name in the table
    :param model: the model
    """

    def step(n: int) -> int:
        before = model.num_timesteps
        model.learn(n, reset_num_timesteps=before == 0)
        return model.num_timesteps - before

    return Contender(name, step)


def vec_env_contender(env: VecEnv, seed: int) -> Contender:
    """
    Steps of a vectorised env with random actions drawn beforehand (the same env a model trains on).

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

    return Contender(VEC_ENV, step)


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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _describe(value: Any) -> str:
    """A short readable text of a settings value: classes and schedules by name, containers recursively."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}={_describe(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(item) for item in value) + "]"
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, LinearSchedule):
        return f"linear({value.start:g} -> {value.end:g})"
    if callable(value):
        return type(value).__name__
    return repr(value) if isinstance(value, str) else str(value)


def run_speed(
    env_id: str = "Hopper-v5",
    algos: Sequence[str] = ("apo", "ppo_penalty", "spo", "ppo"),
    rounds: int = 5,
    steps_per_round: int = 16_384,
    warmup_steps: int = 4096,
    hyperparams_dir: Path | None = None,
    out: Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int = 1,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """
    Measure and compare training step rates, and write ``speed.md``, ``speed.csv`` (one row per
    measurement) and ``speed.json`` into ``out``.

    :param env_id: the environment id
    :param algos: algorithms, keys of :data:`ALGORITHMS`; ``ppo`` (the reference) is added if missing
    :param rounds: measured rounds; every contender runs once per round, in an order rotated each round
    :param steps_per_round: environment steps per contender and round
    :param warmup_steps: steps per contender before the measured rounds (not counted)
    :param hyperparams_dir: a folder of ``<algo>.yml`` files to build the models from (default: the paper's settings)
    :param out: the output folder (``None``: write nothing)
    :param seed: the seed of models and envs
    :param device: the torch device of the models
    :param threads: torch threads (set before building anything)
    :param command: the command line to record (default: this process's)
    :param log: where progress lines go
    :return: the summary: settings and one row per contender
    """
    if rounds < 1 or steps_per_round < 1:
        raise ValueError("rounds and steps_per_round must be at least 1")
    unknown = [algo for algo in algos if algo not in ALGORITHMS]
    if unknown:
        raise ValueError(f"Unknown algorithm(s) {unknown}; the speed benchmark knows {sorted(ALGORITHMS)}.")
    algos = [*dict.fromkeys([*algos, REFERENCE])]
    th.set_num_threads(threads)
    settings = {
        algo: settings_from_yaml(hyperparams_dir / f"{algo}.yml", env_id) if hyperparams_dir else paper_settings(algo)
        for algo in algos
    }
    contenders = [model_contender(algo, make_model(algo, env_id, settings[algo], seed, device)) for algo in algos]
    contenders.append(vec_env_contender(make_env(env_id, settings[REFERENCE], seed), seed))
    contenders.append(raw_env_contender(env_id, seed))
    load_before = os.getloadavg()

    log(f"warm-up: {warmup_steps} steps each")
    for contender in contenders:
        if warmup_steps > 0:
            contender.step(warmup_steps)

    measurements: list[dict[str, Any]] = []
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for contender in order:
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            steps = contender.step(steps_per_round)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            measurements.append(
                {
                    "round": round_index,
                    "contender": contender.name,
                    "steps": steps,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "steps_per_s": steps / wall,
                    "steps_per_cpu_s": steps / cpu if cpu > 0 else math.nan,
                }
            )
        rates = {m["contender"]: m["steps_per_s"] for m in measurements if m["round"] == round_index}
        log(f"round {round_index + 1}/{rounds}: " + ", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items()))
    load_after = os.getloadavg()

    rows = summarise(measurements, [contender.name for contender in contenders])
    summary = {
        "env": env_id,
        "rounds": rounds,
        "steps_per_round": steps_per_round,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "device": device,
        "torch_threads": threads,
        "settings_source": str(hyperparams_dir) if hyperparams_dir else "paper settings (constructor)",
        "settings": {algo: _describe(value)[1:-1] for algo, value in settings.items()},
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "python": platform.python_version(),
        "torch": th.__version__,
        "command": command if command is not None else " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": rows,
    }
    if out is not None:
        write_outputs(out, summary, measurements)
    log(markdown(summary))
    return summary


def summarise(measurements: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """
    Per contender: median steps/s, and its ratio to the reference in the same round (mean, std, min, max),
    by wall time and by CPU time.

    :param measurements: one dict per (round, contender)
    :param names: the contenders, in table order
    """
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for measurement in measurements:
        by_round.setdefault(measurement["round"], {})[measurement["contender"]] = measurement
    rows = []
    for name in names:
        rates = np.array([r[name]["steps_per_s"] for r in by_round.values()])
        ratios = np.array([r[name]["steps_per_s"] / r[REFERENCE]["steps_per_s"] for r in by_round.values()])
        cpu_ratios = np.array([r[name]["steps_per_cpu_s"] / r[REFERENCE]["steps_per_cpu_s"] for r in by_round.values()])
        rows.append(
            {
                "contender": name,
                "steps_per_s_median": float(np.median(rates)),
                "steps_per_s_min": float(np.min(rates)),
                "steps_per_s_max": float(np.max(rates)),
                "ratio_mean": float(np.mean(ratios)),
                "ratio_std": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else math.nan,
                "ratio_min": float(np.min(ratios)),
                "ratio_max": float(np.max(ratios)),
                "cpu_ratio_mean": float(np.mean(cpu_ratios)),
                "cpu_ratio_std": float(np.std(cpu_ratios, ddof=1)) if len(cpu_ratios) > 1 else math.nan,
            }
        )
    return rows


def markdown(summary: dict[str, Any]) -> str:
    """
    The speed table in Markdown, with the settings it was measured with.

    :param summary: what :func:`run_speed` returns
    """

    def ratio(mean: float, std: float) -> str:
        return f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else "")

    lines = [
        f"# Training speed on {summary['env']}",
        "",
        f"Steps per second of training (rollout + update, `learn()`), {summary['rounds']} interleaved rounds of "
        f"{summary['steps_per_round']:,} steps per contender after {summary['warmup_steps']:,} warm-up steps, in one "
        f"process, {summary['torch_threads']} torch thread(s), device {summary['device']}. Ratio: to SB3 PPO's rate "
        "in the same round, mean ± sample std (min-max) over rounds; by CPU time: the same with process CPU time, "
        "which other processes on the machine disturb less.",
        "",
        "| contender | steps/s (median) | ratio to PPO | min-max | ratio to PPO by CPU time |",
        "|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['contender']} | {row['steps_per_s_median']:,.0f} | {ratio(row['ratio_mean'], row['ratio_std'])} | "
            f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f} | {ratio(row['cpu_ratio_mean'], row['cpu_ratio_std'])} |"
        )
    load_before = ", ".join(f"{value:.2f}" for value in summary["load_average_before"])
    load_after = ", ".join(f"{value:.2f}" for value in summary["load_average_after"])
    lines += [
        "",
        f"Settings ({summary['settings_source']}):",
        "",
        *(
            [f"- every algorithm: {next(iter(summary['settings'].values()))}"]
            if len(set(summary["settings"].values())) == 1
            else [f"- `{algo}`: {text}" for algo, text in summary["settings"].items()]
        ),
        "",
        f"Machine: {summary['cpu']}, {summary['cpu_count']} CPUs; load average before {load_before}, after "
        f"{load_after}; Python {summary['python']}, torch {summary['torch']}.",
        "",
        f"Command: `{summary['command']}`",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, summary: dict[str, Any], measurements: Sequence[dict[str, Any]]) -> None:
    """
    Write ``speed.md``, ``speed.json``, ``speed_summary.csv`` and ``speed.csv`` (raw measurements).

    :param out: the output folder
    :param summary: what :func:`run_speed` returns
    :param measurements: one dict per (round, contender)
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text(markdown(summary), encoding="utf-8")
    (out / "speed.json").write_text(to_json(summary), encoding="utf-8")
    write_csv(out / "speed_summary.csv", list(summary["rows"][0]), [list(row.values()) for row in summary["rows"]])
    write_csv(out / "speed.csv", list(measurements[0]), [list(m.values()) for m in measurements])
