"""
``examples/support_apo_pass_at_k.py`` without ``--out`` writes into a new folder, never into the
committed ``results/support_apo`` (nor into another run's folder).
"""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_apo_pass_at_k.py"


@pytest.fixture()
def example():
    spec = importlib.util.spec_from_file_location("support_apo_pass_at_k", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_default_output_is_a_fresh_folder(example, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # as if run from the repository root, which holds the committed results
    committed = tmp_path / "results" / "support_apo"
    committed.mkdir(parents=True)
    (committed / "summary.md").write_text("committed")
    first, second = example.parse_args([]).out, example.parse_args([]).out
    assert first != second
    for out in (first, second):
        assert out.is_dir() and not any(out.iterdir())
        assert out.resolve().parent == (tmp_path / "runs" / "support_apo").resolve()
    assert f"Writing to {first}" in capsys.readouterr().out
    assert example.parse_args(["--out", str(committed)]).out == committed  # regenerating them is explicit
    assert [path.name for path in committed.iterdir()] == ["summary.md"]


def test_summarising_needs_the_folder_of_a_run(example, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        example.parse_args(["--summarise-only"])
    assert exit_.value.code == 2
    assert "--summarise-only needs --out" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
