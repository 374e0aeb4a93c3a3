"""
The benchmark harness: a resumable grid runner over the rl-zoo3-style launcher, and the
training callback that records each run's diagnostics. Run ``python -m sb3_apo.benchmark run --help``;
the report and the speed benchmark are scripts in the repository's ``benchmarks/`` folder
(see ``docs/benchmarks.md``).
"""

from sb3_apo.benchmark.callbacks import DiagnosticsCSVCallback
from sb3_apo.benchmark.grid import GridError, GridRunner, GridSettings, RunSpec, Variant, plan_grid

__all__ = ["DiagnosticsCSVCallback", "GridError", "GridRunner", "GridSettings", "RunSpec", "Variant", "plan_grid"]
