"""The APO paper's mechanism on a fixed rollout: anchoring keeps unsampled-action ratios near 1."""

import pytest

from sb3_apo import APO, SPO, PPOPenalty

pytestmark = pytest.mark.slow  # learning runs: 50 epochs on a Hopper-v5 rollout, per algorithm


def diagnostics_after_one_update(algo, **kwargs):
    # Same seed, so every model sees the very same first rollout; then 50 epochs on it.
    model = algo("MlpPolicy", "Hopper-v5", n_steps=1024, batch_size=256, n_epochs=50, learning_rate=1e-3, seed=0, **kwargs)
    model.learn(1024)
    return {key.removeprefix("train/"): value for key, value in model.logger.name_to_value.items()}


@pytest.fixture(scope="module")
def ppo_clip():
    pytest.importorskip("mujoco")
    return diagnostics_after_one_update(APO, anchor_coef=0.0)


def test_apo_keeps_anchor_ratios_much_closer_to_one_than_ppo_clip(ppo_clip):
    apo = diagnostics_after_one_update(APO)  # the defaults: anchor_coef=1, K=2
    assert ppo_clip["anchor_ratio_max"] > 1.8
    assert apo["anchor_ratio_max"] - 1 < 0.6 * (ppo_clip["anchor_ratio_max"] - 1)
    assert apo["anchor_ratio_dev"] < 0.75 * ppo_clip["anchor_ratio_dev"]
    assert apo["kl"] < 0.5 * ppo_clip["kl"]


def test_a_stronger_anchor_restrains_more(ppo_clip):
    weak, strong = diagnostics_after_one_update(APO, anchor_coef=1.0), diagnostics_after_one_update(APO, anchor_coef=5.0)
    assert strong["anchor_ratio_max"] < weak["anchor_ratio_max"] < ppo_clip["anchor_ratio_max"]
    assert strong["kl"] < weak["kl"]


def test_the_other_algorithms_measure_anchor_ratios_too(ppo_clip):
    for algo in (PPOPenalty, SPO):
        logs = diagnostics_after_one_update(algo)
        assert logs["anchor_ratio_max"] > 1.0 and logs["anchor_ratio_dev"] > 0.0
