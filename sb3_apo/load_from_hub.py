"""``python -m sb3_apo.load_from_hub``: rl-zoo3's ``load_from_hub`` with this package's algorithms.

See :mod:`sb3_apo.zoo.cli`.
"""

from sb3_apo.zoo.cli import load_from_hub

if __name__ == "__main__":
    raise SystemExit(load_from_hub())
