"""``python -m sb3_apo.enjoy``: rl-zoo3's ``enjoy`` with this package's algorithms.

See :mod:`sb3_apo.zoo.cli`.
"""

from sb3_apo.zoo.cli import enjoy

if __name__ == "__main__":
    raise SystemExit(enjoy())
