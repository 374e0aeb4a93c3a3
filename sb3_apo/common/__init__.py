"""Pieces shared by every algorithm of the package: the PPO-family loop, buffers and distribution maths."""
