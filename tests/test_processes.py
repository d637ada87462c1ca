"""Processes: searches launched as their own process group, records, refusal, stop, progress."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from automl_core.analysis import progress
from automl_core.errors import ConfigError
from automl_core.hosting import processes
from automl_core.search import preflight, workers
from automl_core.storage.settings import SearchSettings

TINY = {
    "num_conv_layers": [1],
    "filters": [4],
    "activation": ["relu"],
    "latent_dim": [4, 8],
    "batch_size": [32],
}


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _sleeper(seconds: int = 60, with_child: bool = False) -> subprocess.Popen:
    """A process whose command line names automl_core (as a launched search's does)."""
    code = "import time, subprocess, sys\n"
    if with_child:
        code += "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    code += f"time.sleep({seconds})"
    return subprocess.Popen([sys.executable, "-c", code, "automl_core"], start_new_session=True)


def _record(study: str, process: subprocess.Popen) -> None:
    workers.launches_dir().mkdir(parents=True, exist_ok=True)
    record = {
        "study": study,
        "pid": process.pid,
        "started": time.time(),
        "log": str(workers.launches_dir() / f"{study}.log"),
        "command": [],
    }
    (workers.launches_dir() / f"{study}.json").write_text(json.dumps(record))


class TestLaunchRecords:
    def test_launch_is_refused_while_the_same_study_runs(self, runs_dir):
        process = _sleeper()
        try:
            _record("busy", process)
            assert processes.is_running("busy") and processes.running_studies() == ["busy"]
            settings = SearchSettings(study="busy", dataset="digits", space=TINY, strategy="grid")
            with pytest.raises(ConfigError, match="already running"):
                processes.launch_search(settings)
        finally:
            os.killpg(process.pid, 9)
            process.wait()
        assert not processes.is_running("busy")

    def test_stop_ends_the_whole_process_group(self, runs_dir):
        process = _sleeper(with_child=True)
        _record("group", process)
        time.sleep(1.0)
        assert processes._group_alive(process.pid)
        assert processes.stop_search("group", grace_seconds=5)
        assert not processes._group_alive(process.pid)
        assert not processes.is_running("group")
        assert processes.stop_search("group") is False

    def test_existing_study_with_other_settings_is_refused(self, tiny_study):
        settings = SearchSettings(study="tiny", dataset="patches", space=TINY, strategy="grid")
        with pytest.raises(ConfigError, match="already exists with dataset='digits'"):
            preflight.check_search(settings, tiny_study[1])

    def test_impossible_space_is_refused_before_launch(self, runs_dir):
        space = {**TINY, "num_conv_layers": [4]}
        settings = SearchSettings(study="deep", dataset="digits", space=space, strategy="grid")
        with pytest.raises(ConfigError, match="num_conv_layers=4"):
            processes.launch_search(settings)
        assert processes.read_record("deep") is None

    def test_progress_of_a_finished_study(self, tiny_study):
        now = progress.search_progress("tiny", tiny_study[1])
        assert now.exists and not now.running
        assert now.done == now.budget == 4 and now.fraction == 1.0
        assert progress.search_progress("nothing-yet", tiny_study[1]).exists is False


def test_the_launched_search_reads_back_every_setting(tmp_path):
    """One serialisation: the launch's settings file is what its search process resolves."""
    from automl_core import cli

    settings = SearchSettings(
        study="s1",
        dataset="digits",
        space=TINY,
        strategy="random",
        trials=3,
        timeout=60,
        max_epochs=2,
        max_images=120,
        precision="float32",
    )
    settings_file = tmp_path / "s1.settings.json"
    settings_file.write_text(settings.to_json(), "utf-8")
    command = processes.build_command(settings_file, 2)
    assert command[1:4] == ["-m", "automl_core", "search"] and "--storage" not in command
    args = cli._build_parser().parse_args(command[3:])
    assert args.workers == 2
    assert cli._settings_file(args.settings) == settings.to_dict()


def test_storage_url_travels_in_the_environment_not_the_command_line(runs_dir):
    url = "postgresql://bob:s3cret@db.invalid/automl"
    env = workers.child_environment(url)
    assert env["AUTOML_STORAGE"] == url and env["AUTOML_HOME"] == str(runs_dir)


def test_two_launches_at_once_start_one_search(runs_dir, monkeypatch):
    """The check-then-start of a launch is atomic: the second caller is refused."""
    import threading

    started, refused = [], []
    real_popen = subprocess.Popen

    def fake_check(settings, storage_url=None, input_shape=None):
        time.sleep(0.3)  # widen the window in which both would see no running search

    def fake_popen(command, **kwargs):
        process = real_popen([sys.executable, "-c", "import time; time.sleep(30)", "automl_core"])
        started.append(process)
        return process

    monkeypatch.setattr(processes, "check_search", fake_check)
    monkeypatch.setattr(processes.subprocess, "Popen", fake_popen)
    settings = SearchSettings(study="twice", dataset="digits", space=TINY, trials=1)

    def launch():
        try:
            processes.launch_search(settings)
        except ConfigError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=launch) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(started) == 1 and len(refused) == 1
        assert "already running" in refused[0]
    finally:
        for process in started:
            process.kill()
            process.wait()
