"""
The benchmark harness: the resumable grid runner (``python -m sb3_apo.benchmark run``) and the
callback that records each run's diagnostics; the report and speed scripts are in ``benchmarks/``.
"""

from sb3_apo.benchmark.callbacks import DiagnosticsCSVCallback
from sb3_apo.benchmark.grid import GridError, GridRunner, GridSettings, RunSpec, Variant, plan_grid

__all__ = ["DiagnosticsCSVCallback", "GridError", "GridRunner", "GridSettings", "RunSpec", "Variant", "plan_grid"]
