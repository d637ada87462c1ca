"""The command line: the search report, read-only commands, and one-line errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automl_core.cli import main


@pytest.mark.slow
def test_search_prints_trials_leaderboard_config_and_filters_on_request(runs_dir, capsys):
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
    assert "Leaderboard:" in out and "Best configuration" in out
    assert "Layer_1:" not in out  # the filters only with --show-filters
    assert main([*argv, "--show-filters"]) == 0
    again = capsys.readouterr().out
    assert "trial    2" not in again  # nothing retrained
    assert "Layer_1:" in again and "Filter 1:" in again and "Layer_2:" in again
    assert "(mean over 4 input channels)" in again
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
        (["leaderboard", "--study", "ghost"], "no study database at "),  # read-only: not made
        (["search", "--seed", "-1"], "seed must be a non-negative integer, got seed=-1"),
        (["search", "--seed", str(2**31)], f"seed must be at most {2**31 - 1}, got seed="),
        (["search", "--trials", "0"], "trials must be a positive integer, got trials=0"),
        (["search", "--max-epochs", "0"], "max_epochs must be a positive integer, got max"),
        (["search", "--workers", "0"], "workers must be a positive integer, got workers=0"),
        (["search", "--study", "name\n"], "invalid study name 'name\\n'"),
        (["leaderboard", "--study", "s", "--top", "-1"], "top must be a positive integer, got"),
        (["leaderboard", "--study", "s", "--top", "0"], "top must be a positive integer, got"),
        (["worker", "--study", "s", "--max-trials", "0"], "max_trials must be a positive"),
        (["worker", "--study", "s", "--seed-offset", "-2"], "seed_offset must be a non-negative"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(runs_dir, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_an_unknown_study_in_an_existing_database_is_named(tiny_study, capsys):
    assert main(["leaderboard", "--study", "ghost"]) == 2
    assert "no study named 'ghost'" in capsys.readouterr().err


def test_top_keeps_exactly_that_many_rows(tiny_study, capsys):
    assert main(["leaderboard", "--study", "tiny", "--top", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # header and one trial


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (read from /proc, no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_sigterm_stops_the_search_and_its_worker(process_workers, runs_dir):
    """``kill -TERM`` on ``search`` acts like Ctrl-C: the worker stops, its trial is queued."""
    import optuna

    from automl_core.storage import store

    search = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "automl_core",
            "search",
            "--dataset",
            "digits",
            "--max-images",
            "40",
            "--max-epochs",
            "1",
            "--strategy",
            "random",
            "--trials",
            "200",
            "--num-conv-layers",
            "1",
            "--filters",
            "4",
            "--latent-dim",
            "4",
            "--study",
            "term",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        workers, running = [], False
        while time.monotonic() < deadline and not running and search.poll() is None:
            time.sleep(0.5)
            workers = workers or _children(search.pid)
            if workers and store.storage_exists() and "term" in store.study_names(create=False):
                study = store.load_study("term", create=False)
                running = any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
        assert running and workers, "the search never started a trial"
        search.send_signal(signal.SIGTERM)
        output = search.communicate(timeout=60)[0]
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 130, output
    assert "stopped; run the same command again to resume" in output
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers), "the worker outlived the search"
    states = {t.state for t in store.load_study("term").get_trials(deepcopy=False)}
    assert optuna.trial.TrialState.RUNNING not in states


def test_exit_status_from_a_real_process(runs_dir):
    result = subprocess.run(
        [sys.executable, "-m", "automl_core", "search", "--dataset", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown dataset 'nope'")
