"""
The queue of ``benchmarks/studies/paper_scale.py``: tiers 1 and 2 (10M steps, tier 1's fourth variant after
the first three) and tier 3 (rl-zoo3's own tuned PPO entries, as ``ppo`` and as ``apo``).
"""

from pathlib import Path

import rl_zoo3
import yaml

from benchmarks.studies import paper_scale

ZOO_PPO = Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml"


def test_the_files_hold_rl_zoo3s_tuned_entries_renamed_to_v5():
    zoo = yaml.safe_load(ZOO_PPO.read_text())
    for algo in paper_scale.ZOO_TUNED_ALGOS:
        entries = yaml.safe_load((paper_scale.ZOO_TUNED_FILES / f"{algo}.yml").read_text())
        assert sorted(entries) == sorted(paper_scale.ZOO_TUNED_ENVS)
        for env in paper_scale.ZOO_TUNED_ENVS:
            assert entries[env] == zoo[env.replace("-v5", "-v4")], (algo, env)


def test_tier_3_runs_seed_by_seed_with_each_algorithms_file_in_its_own_folder():
    queue = paper_scale.zoo_tuned_queue(range(2))
    assert [(runs[0].seed, runs[0].algo) for _, runs in queue] == [(0, "ppo"), (0, "apo"), (1, "ppo"), (1, "apo")]
    for settings, runs in queue:
        assert settings.results == Path("results/zoo_tuned") and settings.n_timesteps == 1_000_000
        assert [run.env for run in runs] == list(paper_scale.ZOO_TUNED_ENVS)
        command = runs[0].command(settings)
        conf = command[command.index("-conf") + 1]
        assert conf == f"benchmarks/studies/zoo_tuned/{runs[0].algo}.yml" and Path(conf).is_file()
        assert settings.checkpoint_freq == paper_scale.ZOO_TUNED_CHECKPOINT_FREQ
    # tiers 1 and 2 are untouched: 10M steps into results/paper_scale
    assert sorted(paper_scale.TIERS) == [1, 2] and str(paper_scale.RESULTS) == "results/paper_scale"


def test_tier_1s_fourth_variant_starts_after_the_first_three_and_tier_2_after_tier_1():
    keys = [run.key for run in paper_scale.tier_queue([1, 2])]
    assert len(keys) == len(set(keys)) == 7 * 5
    # the runs the grid began with keep their places: seed by seed, the three variants in turn
    assert keys[:3] == [
        "HalfCheetah-v5/ppo/epochs50/seed_0",
        "HalfCheetah-v5/apo/epochs50/seed_0",
        "HalfCheetah-v5/apo/epochs50-exact-auto/seed_0",
    ]
    assert keys[12:15] == [run.replace("seed_0", "seed_4") for run in keys[:3]]
    assert keys[15:20] == [f"HalfCheetah-v5/apo/epochs50-parity/seed_{seed}" for seed in range(5)]
    assert keys[20:22] == ["Walker2d-v5/ppo/base/seed_0", "Walker2d-v5/apo/base/seed_0"]
    assert keys[28:30] == ["Walker2d-v5/ppo/base/seed_4", "Walker2d-v5/apo/base/seed_4"]
    # tier 2's parity row comes after its first two rows
    assert keys[30:] == [f"Walker2d-v5/apo/parity/seed_{seed}" for seed in range(5)]


def test_variants_select_rows_and_the_parity_variant_sets_the_papers_loss():
    runs = paper_scale.tier_queue([1, 2], variants=["epochs50-parity"])
    assert [run.seed for run in runs] == list(range(5))
    command = runs[0].command(paper_scale.tier_settings())
    params = command[command.index("-params") + 1 :]
    assert "n_epochs:50" in params and "anchor_mode:'parity'" in params
    assert [run.key for run in paper_scale.tier_queue([2], variants=["epochs50"])] == []
    runs = paper_scale.tier_queue([2], variants=["parity"])
    command = runs[0].command(paper_scale.tier_settings())
    params = command[command.index("-params") + 1 :]
    assert "anchor_mode:'parity'" in params and not any(param.startswith("n_epochs") for param in params)
