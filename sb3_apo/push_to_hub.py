"""``python -m sb3_apo.push_to_hub``: rl-zoo3's ``push_to_hub`` with this package's algorithms and model card.

See :mod:`sb3_apo.zoo.cli`.
"""

from sb3_apo.zoo.cli import push_to_hub

if __name__ == "__main__":
    raise SystemExit(push_to_hub())
