"""The command line: the search report, read-only commands, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from automl_core.cli import main


@pytest.mark.slow
def test_search_prints_trials_leaderboard_config_and_filters(runs_dir, capsys):
    argv = [
        "search",
        "--dataset",
        "digits",
        "--strategy",
        "grid",
        "--max-images",
        "100",
        "--num-conv-layers",
        "1,2",
        "--filters",
        "4",
        "--activation",
        "relu",
        "--latent-dim",
        "4",
        "--max-epochs",
        "1",
        "--study",
        "cli",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("COMPLETE") >= 4  # two trial lines and two leaderboard rows
    assert "Leaderboard:" in out and "Best configuration:" in out
    assert "Layer_1:" in out and "Filter 1:" in out and "Layer_2:" in out
    assert "(mean over 4 input channels)" in out
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "trial    2" not in again  # nothing retrained
    assert main(["leaderboard", "--study", "cli", "--top", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["filters", "--study", "cli", "--trial", "0"]) == 0
    assert "Filter 2:" in capsys.readouterr().out


def test_datasets_lists_the_registry(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist-5k", "digits", "patches", "mnist", "fashion-mnist", "cifar10"):
        assert name in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["search", "--dataset", "/no/such/file.npz"], "does not exist"),
        (["search", "--filters", ""], "filters: the list of choices is empty"),
        (["search", "--latent-dim", "0"], "latent_dim must be a positive integer"),
        (["search", "--activation", "relu,bogus"], "unknown activation 'bogus'"),
        (["search", "--optimizer", "adamm"], "unknown optimizer 'adamm'"),
        (["search", "--dataset", "digits", "--num-conv-layers", "4"], "at most 3 layers"),
        (["search", "--study", "../x"], "invalid study name"),
        (["search", "--strategy", "nope"], "unknown strategy 'nope'"),
        (["search", "--workers", "0", "--dataset", "digits"], "workers must be a positive"),
        (["search", "--timeout", "-1"], "timeout must be a positive"),
        (["search", "--storage", "bogus"], "malformed storage URL 'bogus'"),
        (["search", "--space", "missing.yaml"], "does not exist"),
        (["worker", "--study", "ghost"], "no study named 'ghost'"),
        (["leaderboard", "--study", "ghost"], "no study named 'ghost'"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(runs_dir, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_exit_status_from_a_real_process(runs_dir):
    result = subprocess.run(
        [sys.executable, "-m", "automl_core", "search", "--dataset", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown dataset 'nope'")
