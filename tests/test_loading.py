"""
Loading: the archive names the algorithm that saved it; loaded values are checked as the constructor
checks its arguments; damaged files are named; renamed parameters still load; and every algorithm
continues from SB3's ``PPO`` and from the others.
"""

import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from sb3_apo import APO, SPO, PPOPenalty, SupportAPO
from sb3_apo.common.buffers import DistributionParamsMixin
from sb3_apo.common.checks import HyperparameterError
from sb3_apo.common.loading import TAG_ATTRIBUTE
from sb3_apo.support_apo.buffers import ReferenceParamsMixin

ALGORITHMS = [APO, PPOPenalty, SPO, SupportAPO]
SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archives")
    models = {
        "ppo": PPO("MlpPolicy", "CartPole-v1", **SMALL),
        "apo": APO("MlpPolicy", "CartPole-v1", anchor_coef=0.5, **SMALL),
        "ppo_penalty": PPOPenalty("MlpPolicy", "CartPole-v1", kl_coef=3.0, kl_target=0.02, **SMALL),
        "spo": SPO("MlpPolicy", "CartPole-v1", **SMALL),
        "support_apo": SupportAPO("MlpPolicy", "CartPole-v1", ref_kl_coef=0.3, top_k=1, **SMALL),
    }
    for name, model in models.items():
        model.learn(32).save(folder / name)
    return {name: folder / f"{name}.zip" for name in models}


def rewrite_data(source, target, change):
    """Copy an archive, with its data (the model's attributes, as JSON) changed by ``change(data)``."""
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    change(data)
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return target


def set_value(name, value):
    return lambda data: data.__setitem__(name, value)


def continue_training(algo, path, env_id="CartPole-v1", **kwargs):
    model = algo.load(path, env=gym.make(env_id), **kwargs)
    policy_before = [parameter.clone() for parameter in model.policy.parameters()]
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 64
    assert any(not th.equal(old, new) for old, new in zip(policy_before, model.policy.parameters(), strict=True))
    assert isinstance(model.rollout_buffer, DistributionParamsMixin)
    return model


# --------------------------------------------------------------------------- #
# The algorithm tag
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_the_archive_names_its_algorithm_and_its_hyperparameters(algo, tmp_path):
    algo("MlpPolicy", "CartPole-v1", **SMALL).save(tmp_path / "model")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        tag = json.loads(archive.read("data"))[TAG_ATTRIBUTE]
    assert tag == {"algorithm": algo.__name__, "hyperparameters": sorted(algo.own_hyperparameters)}


def test_a_loaded_model_is_tagged_by_its_own_class(archives, tmp_path):
    with pytest.warns(UserWarning, match="has no reference_policy"):
        PPOPenalty.load(archives["support_apo"]).save(tmp_path / "again")
    model = SupportAPO.load(tmp_path / "again")
    assert model.ref_kl_coef == 0.0 and model.top_k == 8  # the PPOPenalty archive held no SupportAPO value


def test_loading_does_not_depend_on_the_subclasses_defined(archives):
    class LooksLikePPOPenalty(APO):  # a user's subclass declaring PPOPenalty's names
        own_hyperparameters = {**APO.own_hyperparameters, "kl_coef": lambda name, value: None}

    assert PPOPenalty.load(archives["ppo_penalty"]).kl_target == 0.02
    assert LooksLikePPOPenalty  # defined, and ignored by PPOPenalty.load


@pytest.mark.parametrize(
    ("saved_by", "algo", "expected"),
    [
        ("apo", APO, {"anchor_coef": 0.5}),
        ("ppo_penalty", PPOPenalty, {"kl_target": 0.02}),
        ("support_apo", SupportAPO, {"ref_kl_coef": 0.3, "top_k": 1}),
        ("spo", SPO, {}),
    ],
)
def test_archives_without_the_tag_still_load(saved_by, algo, expected, archives, tmp_path):
    def as_before_the_tag(data):
        del data[TAG_ATTRIBUTE]
        if "diagnostic_anchor_actions" in data:  # the former name, of every algorithm
            data["n_anchor_actions"] = data.pop("diagnostic_anchor_actions")
        if "ref_kl_coef" in data:
            data["kl_coef"] = data.pop("ref_kl_coef")

    old = rewrite_data(archives[saved_by], tmp_path / "old.zip", as_before_the_tag)
    model = algo.load(old)
    for name, value in expected.items():
        assert getattr(model, name) == value, name
    assert not hasattr(model, "kl_coef") or algo is PPOPenalty
    if algo is not APO:
        assert not hasattr(model, "n_anchor_actions")
    if saved_by == "support_apo":
        with pytest.warns(UserWarning, match="PPOPenalty has no reference_policy"):
            assert PPOPenalty.load(old).kl_coef == 1.0  # SupportAPO's kl_coef is not PPOPenalty's beta


def test_renamed_keywords_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="`kl_coef` is deprecated .* use `ref_kl_coef`"):
        assert SupportAPO("MlpPolicy", "CartPole-v1", kl_coef=0.2).ref_kl_coef == 0.2
    for algo in (SPO, PPOPenalty):
        with pytest.warns(DeprecationWarning, match="use `diagnostic_anchor_actions`"):
            assert algo("MlpPolicy", "CartPole-v1", n_anchor_actions=5).diagnostic_anchor_actions == 5


def test_renamed_keywords_of_load_still_work(archives):
    with pytest.warns(DeprecationWarning, match="use `ref_kl_coef`"):
        assert SupportAPO.load(archives["support_apo"], kl_coef=0.7).ref_kl_coef == 0.7


# --------------------------------------------------------------------------- #
# Loaded values are checked as the constructor checks them
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("saved_by", "algo", "kwargs", "message"),
    [
        ("apo", APO, {"anchor_coef": -1}, r"`anchor_coef` must be a number in \[0, inf\)"),
        ("apo", APO, {"anchor_coef": "auto_0.1_2"}, "`anchor_coef` must be"),
        ("apo", APO, {"n_epochs": 0}, r"`n_epochs` must be an integer in \[1, inf\)"),
        ("apo", APO, {"async_rollouts": "yes"}, "`async_rollouts` must be True or False"),
        ("spo", SPO, {"stats_window_size": 1.5}, "`stats_window_size` must be an integer"),
        ("ppo_penalty", PPOPenalty, {"kl_coef": 0.0}, "`kl_coef` must be > 0 with adaptive_kl=True"),
        ("support_apo", SupportAPO, {"top_k": 0}, "`top_k` must be"),
    ],
)
def test_load_checks_its_keyword_arguments(saved_by, algo, kwargs, message, archives):
    with pytest.raises(HyperparameterError, match=message):
        algo.load(archives[saved_by], **kwargs)


def test_load_reads_anchor_coef_as_the_constructor_does(archives):
    model = APO.load(archives["apo"], anchor_coef="auto_0.1")
    assert (model.anchor_coef, model.adaptive_anchor_coef) == (0.1, True)


@pytest.mark.parametrize(
    ("saved_by", "algo", "name", "value"),
    [
        ("apo", APO, "gamma", 5),
        ("apo", APO, "batch_size", 0),
        ("apo", APO, "n_epochs", "abc"),
        ("apo", APO, "anchor_coef", "auto"),
        ("apo", APO, "learning_rate", "not a schedule"),
        ("spo", SPO, "_stats_window_size", -1),
        ("support_apo", SupportAPO, "kl_mode", "wrong"),
    ],
)
def test_load_checks_the_archives_values(saved_by, algo, name, value, archives, tmp_path):
    bad = rewrite_data(archives[saved_by], tmp_path / "bad.zip", set_value(name, value))
    with pytest.raises(HyperparameterError, match=rf"Cannot load '.*bad\.zip': `{name.lstrip('_')}` must be"):
        algo.load(bad)


def test_a_bad_archive_value_that_load_overrides_is_not_an_error(archives, tmp_path):
    bad = rewrite_data(archives["apo"], tmp_path / "bad.zip", set_value("n_epochs", 0))
    assert APO.load(bad, n_epochs=3).n_epochs == 3


# --------------------------------------------------------------------------- #
# Damaged files
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupted_archive_is_named(algo, damage, archives, tmp_path):
    content = archives["apo"].read_bytes()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"not a zip file")
    with pytest.raises(ValueError, match=r"Cannot load '.*broken\.zip'.* corrupted"):
        algo.load(broken)


def replace_member(source, target, member, content):
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files[member] = content
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return target


@pytest.mark.parametrize(
    ("member", "content"),
    [
        ("policy.pth", b"\x80junk" * 20),
        ("extra.pth", b"\x80junk" * 20),
        ("data", b"[1, 2, 3]"),
        ("data", b"{not json"),
    ],
)
def test_damaged_members_are_named(member, content, archives, tmp_path):
    broken = replace_member(archives["apo"], tmp_path / "damaged.zip", member, content)
    with pytest.raises(ValueError, match=r"Cannot load '.*damaged\.zip'"):
        APO.load(broken)


def test_state_dicts_are_read_without_running_code(archives, tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (print, ("ran the archive's code",))

    payload = pickle.dumps({"weight": RunsCode()})
    broken = replace_member(archives["apo"], tmp_path / "code.zip", "policy.optimizer.pth", payload)
    with pytest.raises(ValueError, match=r"Cannot load '.*code\.zip'"):
        APO.load(broken)


class RaisesWhenUnpickled:
    def __reduce__(self):
        return (int, ("not a number",))


@pytest.mark.parametrize("kind", ["directory", "raising pickle", "garbage"])
def test_a_reference_that_is_not_a_model_is_named(kind, tmp_path):
    reference = tmp_path / "reference.pt"
    if kind == "directory":
        reference.mkdir()
    elif kind == "raising pickle":
        th.save({"state_dict": RaisesWhenUnpickled()}, reference)
    else:
        reference.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"reference policy '.*reference\.pt'"):
        SupportAPO("MlpPolicy", "CartPole-v1", reference=reference)


def test_corrupted_reference_archive_is_named(archives, tmp_path):
    content = archives["support_apo"].read_bytes()
    broken = tmp_path / "reference.zip"
    broken.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"reference\.zip"):
        SupportAPO("MlpPolicy", "CartPole-v1", reference=broken)


# --------------------------------------------------------------------------- #
# Continuing from SB3's PPO and from the other algorithms
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_continue_from_an_sb3_ppo_model(algo, archives):
    loaded = algo.load(archives["ppo"])
    fresh = algo("MlpPolicy", "CartPole-v1", **SMALL)
    for name in algo.own_hyperparameters:
        assert getattr(loaded, name) == getattr(fresh, name), name
    model = continue_training(algo, archives["ppo"])
    if algo is SupportAPO:
        assert isinstance(model.rollout_buffer, ReferenceParamsMixin)
        assert model._reference_ready  # the reference is the PPO policy as learn() started


@pytest.mark.parametrize("algo", [APO, PPOPenalty, SPO])
def test_continue_from_an_sb3_ppo_model_with_box_actions(algo, tmp_path):
    PPO("MlpPolicy", "Pendulum-v1", **SMALL).learn(32).save(tmp_path / "ppo_pendulum")
    model = continue_training(algo, tmp_path / "ppo_pendulum.zip", env_id="Pendulum-v1")
    assert np.isfinite(model.logger.name_to_value["train/anchor_ratio_max"])


def test_apo_needs_a_clip_range_that_a_ppo_penalty_model_lacks(archives):
    with pytest.raises(HyperparameterError, match=r"APO needs a `clip_range`.*ppo_penalty\.zip.*clip_range=0\.2"):
        APO.load(archives["ppo_penalty"])
    model = continue_training(APO, archives["ppo_penalty"], clip_range=0.2)
    assert model.anchor_coef == 1.0  # APO's default: the archive has no anchor coefficient
    assert not hasattr(model, "kl_target")  # PPOPenalty's hyperparameters are dropped


def test_class_specific_state_is_not_taken_from_another_algorithm(archives):
    with pytest.warns(UserWarning, match="PPOPenalty has no reference_policy"):
        model = PPOPenalty.load(archives["support_apo"])
    assert model.kl_coef == 1.0
    assert not hasattr(model, "top_k") and not hasattr(model, "reference") and not hasattr(model, "ref_kl_coef")

    model = SupportAPO.load(archives["ppo_penalty"], clip_range=0.2)
    assert model.ref_kl_coef == 0.0 and model.top_k == 8  # SupportAPO's defaults
    assert not hasattr(model, "adaptive_kl") and not hasattr(model, "kl_coef")
    continue_training(SupportAPO, archives["ppo_penalty"], clip_range=0.2)


@pytest.mark.parametrize("algo", [APO, SPO, PPOPenalty])
def test_any_algorithm_continues_from_a_support_apo_model(algo, archives):
    with pytest.warns(UserWarning, match=f"{algo.__name__} has no reference_policy"):
        continue_training(algo, archives["support_apo"])


@pytest.mark.parametrize(("algo", "source"), [(SupportAPO, "apo"), (SupportAPO, "spo"), (SPO, "apo"), (PPOPenalty, "apo")])
def test_algorithms_continue_from_each_other(algo, source, archives):
    continue_training(algo, archives[source])


def test_same_algorithm_keeps_its_own_state(archives):
    assert APO.load(archives["apo"]).anchor_coef == 0.5
    model = PPOPenalty.load(archives["ppo_penalty"])
    assert model.kl_target == 0.02 and model.kl_coef != 1.0  # beta as adapted by the saved run
    assert SupportAPO.load(archives["support_apo"]).ref_kl_coef == 0.3
