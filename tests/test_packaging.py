"""
The distributions: ``python -m build`` gives a wheel and an sdist that pass ``twine check``, both
carry the LICENSE, and the sdist holds what a build from source needs and nothing else.
"""

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def test_the_changelog_names_the_version():
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    (first_release,) = re.findall(r"^## \[?([^\]\s]+)", changelog, flags=re.MULTILINE)[:1]
    assert first_release == PROJECT["version"]


def test_the_license_file_is_the_declared_one():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    license_text = (REPO_ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "the sb3-apo authors" in license_text


def test_the_extras_keep_postgresql_and_plots_apart():
    extras = PROJECT["optional-dependencies"]
    assert extras["postgres"] == ["psycopg2-binary"]
    assert not any(requirement.startswith("psycopg2") for requirement in extras["zoo"])
    assert "plotly" in extras["zoo"]  # -optimize writes Optuna's plots of the study


@pytest.mark.slow
def test_build_gives_a_wheel_and_an_sdist_that_twine_accepts(tmp_path):
    pytest.importorskip("build", reason="the tests extra installs build")
    pytest.importorskip("twine", reason="the tests extra installs twine")
    # Build from a copy of what git tracks (links kept as links), so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        path = REPO_ROOT / name
        if path.is_symlink():
            (source / name).symlink_to(path.readlink())
        elif path.is_file():
            shutil.copy(path, source / name)
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    version = PROJECT["version"]
    assert wheel.name == f"sb3_apo-{version}-py3-none-any.whl" and sdist.name == f"sb3_apo-{version}.tar.gz"

    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert f"sb3_apo-{version}.dist-info/licenses/LICENSE" in names
        metadata = archive.read(f"sb3_apo-{version}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata and "Classifier: " in metadata and "Project-URL: " in metadata
    assert "Description-Content-Type: text/markdown" in metadata and metadata.rstrip().endswith(
        (REPO_ROOT / "README.md").read_text().rstrip().splitlines()[-1]
    )
    assert not [name for name in names if not name.startswith(("sb3_apo/", f"sb3_apo-{version}.dist-info/"))]

    with tarfile.open(sdist) as archive:
        members = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    top_level = {name.split("/")[0] for name in members}
    assert top_level == {
        "LICENSE",
        "MANIFEST.in",
        "PKG-INFO",
        "README.md",
        "pyproject.toml",
        "setup.cfg",
        "sb3_apo",
        "sb3_apo.egg-info",
    }
    assert "sb3_apo/zoo/hyperparams/apo.yml" in members
