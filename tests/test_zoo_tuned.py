"""
Tier 3 of ``benchmarks/studies/paper_scale.py``: rl-zoo3's own tuned PPO entries, as ``ppo`` and as ``apo``.
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
    # tiers 1 and 2 are untouched: 10M steps into results/paper_scale
    assert sorted(paper_scale.TIERS) == [1, 2] and str(paper_scale.RESULTS) == "results/paper_scale"
