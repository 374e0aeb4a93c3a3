"""
The benchmark harness: a resumable grid runner over the rl-zoo3-style launcher,
a report step (tables and plots) and a speed benchmark.

Run ``python -m sb3_apo.benchmark --help``; see ``docs/benchmarks.md``.
"""

from sb3_apo.benchmark.callbacks import DiagnosticsCSVCallback
from sb3_apo.benchmark.grid import GridError, GridRunner, GridSettings, RunSpec, Variant, plan_grid
from sb3_apo.benchmark.report import make_report

__all__ = [
    "DiagnosticsCSVCallback",
    "GridError",
    "GridRunner",
    "GridSettings",
    "RunSpec",
    "Variant",
    "make_report",
    "plan_grid",
]
