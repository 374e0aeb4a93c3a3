"""
A throughput model of asynchronous rollouts with many actors, from the Ray measurements, and
its check against them (``docs/async.md``, "A model for many machines").

With ``max_policy_lag >= 1`` collection overlaps the update. Per sample, an actor spends ``c``
seconds collecting (env step and policy, wall time: it includes a simulator's wait), of which
``c_cpu`` on a CPU; the learner spends ``u`` in the update and ``r`` receiving the rollout
(joining shards, replaying the steps to the callbacks, the ``pi_prox`` pass), and ``b * tau``
moving its ``b`` bytes (``tau`` seconds per byte). ``N`` actors then give, in steps/s::

    min( N / c,                  collection
         1 / (u + r + b tau),    the learner, saturated
         K / (u + r + c_cpu) )   K cores shared by learner and actors (one machine only)

so the learner saturates at ``N* = c / (u + r + b tau)`` actors. Inputs: ``u`` and ``r`` are the
learner's CPU seconds per step in the update and in ``collect_rollouts`` with Ray actors
(``results/ray/overhead/speed.csv``); ``c`` is one actor's collection time per step with the
5 ms wait (``results/ray/scaling/``) and without (``results/ray/scaling_cpu/``); ``tau`` comes from
``results/ray/transfer/`` (actor to learner, 8 MB); ``b`` is measured here, as the bytes of one
Hopper-v5 rollout (8 envs x 256 steps) as the transport encodes it, per step.

Run from the repository root: python benchmarks/studies/ray/model.py > results/ray/model.txt
"""

import sys
from pathlib import Path

import pandas as pd

from sb3_apo import APO
from sb3_apo.async_rollouts import learner as learner_module
from sb3_apo.async_rollouts.transport import encode

RESULTS = Path("results/ray")
RAY = "apo:async_rollouts=True,n_actors=2,actor_backend='ray'"
FORK = "apo:async_rollouts=True,n_actors=2"


def bytes_per_step() -> float:
    """The bytes of a Hopper-v5 rollout (8 envs x 256 steps, forked actor) as the transport encodes it, per step."""
    captured = []
    exchange = learner_module.AsyncLearner._exchange

    def capture(self):
        rollout, waited = exchange(self)
        captured.append(rollout)
        return rollout, waited

    learner_module.AsyncLearner._exchange = capture
    try:
        model = APO("MlpPolicy", "Hopper-v5", n_steps=256, async_rollouts=True, n_actors=8, seed=0)
        model.learn(2 * 256 * 8)
    finally:
        learner_module.AsyncLearner._exchange = exchange
    return sum(part.nbytes for part in encode(captured[-1])) / (256 * 8)


def collection_s_per_step(folder: Path, backend: str) -> float:
    rows = pd.read_csv(folder / "scaling.csv")
    rows = rows[(rows.backend == backend) & (rows.n_actors == 1) & (rows.rollout >= 1)]
    steps = rows.timesteps.diff().dropna().iloc[0]  # a rollout's steps
    return rows.actor_collect_s.sum() / (steps * len(rows))


def learner_rates(folder: Path) -> pd.DataFrame:
    rows = pd.read_csv(folder / "scaling.csv")
    out = []
    for (backend, n_actors), frame in rows.groupby(["backend", "n_actors"], sort=False):
        counted = frame[frame.rollout >= 1]
        steps = counted.timesteps.iloc[-1] - frame.timesteps.iloc[0]
        out.append(
            {"backend": backend, "n_actors": n_actors, "measured": steps / (counted.time_s.iloc[-1] - frame.time_s.iloc[0])}
        )
    return pd.DataFrame(out)


def main() -> None:
    speed = pd.read_csv(RESULTS / "overhead" / "speed.csv")
    transfer = pd.read_csv(RESULTS / "transfer" / "transfer.csv")
    per_step = {}
    for name, contender in (("ray", RAY), ("fork", FORK)):
        rows = speed[speed.contender == contender]
        per_step[name] = {
            "u": rows.update_cpu_s.sum() / rows.steps.sum(),
            "r": rows.rollout_cpu_s.sum() / rows.steps.sum(),
            "measured": rows.steps.sum() / rows.wall_s.sum(),
        }
    medians = transfer.groupby(["setup", "direction", "bytes"]).seconds.median()
    tau = {
        setup: (medians[(setup, "actor to learner", 8 << 20)] - medians[(setup, "actor to learner", 1)]) / (8 << 20)
        for setup in ("local instance", "two-node cluster")
    }
    b = bytes_per_step()
    c_wait = collection_s_per_step(RESULTS / "scaling", "ray")
    c_cpu = collection_s_per_step(RESULTS / "scaling_cpu", "ray")
    u, r = per_step["ray"]["u"], per_step["ray"]["r"]
    print("Inputs (Ray backend, Hopper-v5, APO with the project's settings, 2-core machine):")
    print(f"  u  = {1e6 * u:.1f} us/step  learner update CPU (10 epochs, batch 512, 64x64 MLP)")
    print(f"  r  = {1e6 * r:.1f} us/step  learner collect_rollouts CPU (receive, join, replay, pi_prox pass)")
    print(f"  b  = {b:.0f} bytes/step  a rollout as the transport encodes it")
    for setup, value in tau.items():
        print(f"  tau = {1e3 * value * 2**20:.2f} ms/MB  ({setup}; b*tau = {1e6 * b * value:.2f} us/step)")
    print(f"  c  = {1e6 * c_cpu:.0f} us/step  one actor's collection, CPU-bound (16 envs, no wait)")
    print(f"  c  = {1e6 * c_wait:.0f} us/step  one actor's collection with a 5 ms wait per env step (16 envs)")
    print()
    learner_bound = 1 / (u + r + b * tau["local instance"])
    print("Check 1, measurement 1 (CPU-bound Hopper, 2 actors, 2 cores):")
    for name in ("ray", "fork"):
        values = per_step[name]
        predicted = min(2 / c_cpu, 1 / (values["u"] + values["r"]), 2 / (values["u"] + values["r"] + c_cpu))
        print(f"  {name}: predicted {predicted:,.0f} steps/s, measured {values['measured']:,.0f}")
    print()
    print("Check 2, measurement 2 (5 ms wait, 16 envs, 2 cores): learner steps/s")
    rates = learner_rates(RESULTS / "scaling")
    rates["predicted"] = [min(n / c_wait, learner_bound, 2 / (u + r + c_cpu)) for n in rates.n_actors]
    rates["measured / predicted"] = rates.measured / rates.predicted
    print(rates.to_string(index=False, float_format=lambda value: f"{value:,.2f}"))
    print()
    remote_bound = 1 / (u + r + b * tau["two-node cluster"])
    print("Prediction for actors on other machines (one core each), the learner alone on one core:")
    without_update = 1 / (r + b * tau["two-node cluster"])
    print(f"  learner saturated: {remote_bound:,.0f} steps/s; without the update (u -> 0): {without_update:,.0f}")
    for label, c in (("CPU-bound Hopper", c_cpu), ("5 ms simulator", c_wait)):
        print(f"  {label}: N* = c / (u + r + b tau) = {c * remote_bound:.1f} actors")
        for n in (8, 64, 512):
            bound = "learner" if n / c > remote_bound else "collection"
            print(f"    {n:>3} actors: {min(n / c, remote_bound):>9,.0f} steps/s ({bound}-bound)")
    for n in (8, 64, 512):
        samples = n * 2048
        print(
            f"  {n:>3} actors x 2,048 steps per rollout: {samples:,} steps, {samples * b / 2**20:,.0f} MB per update, "
            f"update {samples * u:,.1f} s, transfer {samples * b * tau['two-node cluster']:,.2f} s"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
