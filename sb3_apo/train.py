"""``python -m sb3_apo.train``: rl-zoo3's ``train`` with this package's algorithms.

See :mod:`sb3_apo.zoo.cli`.
"""

from sb3_apo.zoo.cli import train

if __name__ == "__main__":
    raise SystemExit(train())
