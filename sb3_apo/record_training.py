"""``python -m sb3_apo.record_training``: rl-zoo3's ``record_training`` with this package's algorithms.

See :mod:`sb3_apo.zoo.cli`.
"""

from sb3_apo.zoo.cli import record_training

if __name__ == "__main__":
    raise SystemExit(record_training())
