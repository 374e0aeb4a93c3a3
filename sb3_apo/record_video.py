"""``python -m sb3_apo.record_video``: rl-zoo3's ``record_video`` with this package's algorithms.

See :mod:`sb3_apo.zoo.cli`.
"""

from sb3_apo.zoo.cli import record_video

if __name__ == "__main__":
    raise SystemExit(record_video())
