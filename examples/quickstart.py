"""
The README's quick start: train APO on Hopper-v5, save, load and continue.

    python examples/quickstart.py --timesteps 100000
"""

import argparse

import gymnasium as gym

from sb3_apo import APO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5", help="a gymnasium environment id")
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget of the first learn() call")
    parser.add_argument("--out", default="apo_hopper", help="where to save the model (a .zip is added)")
    args = parser.parse_args()

    env = gym.make(args.env)
    model = APO("MlpPolicy", env, verbose=1, tensorboard_log="runs", seed=0)
    model.learn(args.timesteps, progress_bar=True)
    model.save(args.out)

    model = APO.load(args.out, env=env)
    model.learn(10_000, reset_num_timesteps=False)
    print(f"trained {model.num_timesteps} steps in all; anchor_coef={model.anchor_coef}, saved to {args.out}.zip")


if __name__ == "__main__":
    main()
