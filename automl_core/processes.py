"""Searches started from the dashboard: their own OS process, found again from files.

A launch runs ``python -m automl_core search ... --study NAME`` in a new session (its own
process group), writes its output to ``<runs>/launches/<study>.log`` and its process id to
``<runs>/launches/<study>.json``, so a page reload, another browser session or another
dashboard process finds it. Stopping sends SIGINT to the whole group (the CLI and the worker
processes it spawned mark their trials for retry), then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from automl_core import store
from automl_core.datasets import DATASETS, load_arrays
from automl_core.errors import ConfigError, StorageError
from automl_core.search import (
    FAIL_REASON_ATTR,
    LIVE_ATTR,
    SearchSettings,
    get_strategy,
    settings_conflict,
    study_settings,
)

_ROOT = Path(__file__).resolve().parent.parent


def launches_dir() -> Path:
    """The folder of launch records and logs: ``<runs>/launches``."""
    return store.runs_home() / "launches"


def dataset_input_shape(source: str) -> tuple[int, int, int]:
    """The (H, W, C) of one image of a registry dataset or a dataset path.

    Raises:
        DatasetError: The dataset cannot be loaded.
    """
    x, _, _ = load_arrays(source)
    return tuple(int(d) for d in x.shape[1:])  # type: ignore[return-value]


def check_settings(settings: SearchSettings, storage_url: str | None = None) -> None:
    """Checks a search before launching it, so the page can say what is wrong at once.

    Args:
        settings: The search to launch.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.

    Raises:
        ConfigError: Unknown strategy, impossible space for the images, or the study
            exists with other settings.
        DatasetError: The dataset cannot be loaded.
    """
    strategy = get_strategy(settings.strategy)
    space = settings.search_space()
    if strategy.needs_grid:
        space.grid()
    if settings.dataset not in DATASETS or DATASETS[settings.dataset].offline:
        space.validate_for(dataset_input_shape(settings.dataset))
    if settings.study not in store.study_names(storage_url):
        return
    try:
        stored = study_settings(store.load_study(settings.study, storage_url)).to_dict()
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    conflict = settings_conflict(settings, stored)
    if conflict:
        raise ConfigError(conflict)


@dataclass(frozen=True)
class LaunchRecord:
    """A search process started by :func:`launch_search`.

    Attributes:
        study: The study it runs.
        pid: Its process id (also its process-group id).
        started: Unix time of the launch.
        log: Path of its output log.
        command: The command line.
    """

    study: str
    pid: int
    started: float
    log: str
    command: list[str] = field(default_factory=list)


def _record_path(study: str) -> Path:
    return launches_dir() / f"{store.validate_study_name(study)}.json"


def read_record(study: str) -> LaunchRecord | None:
    """The last launch of a study from this runs directory, or None."""
    path = _record_path(study)
    try:
        return LaunchRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    """Whether a process runs (reaping it first if it is our own finished child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        # our own running child (its command line may still be ours between fork and exec)
        return done != pid
    except ChildProcessError:
        pass  # not our child: another dashboard process started it
    except OSError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # a zombie is not running; a recycled pid is not ours
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return b"automl_core" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    return True


def is_running(study: str) -> bool:
    """Whether a search launched for this study is still running."""
    record = read_record(study)
    return record is not None and _alive(record.pid)


def build_command(
    settings: SearchSettings, space_file: Path, workers: int, storage_url: str | None
) -> list[str]:
    """The CLI command line that runs a search."""
    command = [
        sys.executable,
        "-m",
        "automl_core",
        "search",
        "--dataset",
        settings.dataset,
        "--space",
        str(space_file),
        "--strategy",
        settings.strategy,
        "--study",
        settings.study,
        "--max-epochs",
        str(settings.max_epochs),
        "--workers",
        str(workers),
        "--seed",
        str(settings.seed),
        "--second-objective",
        settings.second_objective,
    ]
    if settings.trials is not None:
        command += ["--trials", str(settings.trials)]
    if settings.timeout is not None:
        command += ["--timeout", f"{settings.timeout:g}"]
    if settings.max_images is not None:
        command += ["--max-images", str(settings.max_images)]
    if storage_url:
        command += ["--storage", storage_url]
    return command


def launch_search(
    settings: SearchSettings, workers: int = 1, storage_url: str | None = None
) -> LaunchRecord:
    """Starts a search as its own process group and records it; returns at once.

    Args:
        settings: The search (checked with :func:`check_settings` first).
        workers: Worker processes. Defaults to 1.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.

    Returns:
        The launch record.

    Raises:
        ConfigError: A search of this study is already running, or the settings are invalid.
        DatasetError: The dataset cannot be loaded.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got workers={workers!r}")
    if is_running(settings.study):
        raise ConfigError(
            f"a search of study {settings.study!r} is already running; stop it first or "
            "pick another study name"
        )
    check_settings(settings, storage_url)
    folder = launches_dir()
    folder.mkdir(parents=True, exist_ok=True)
    space_file = folder / f"{settings.study}.space.json"
    space_file.write_text(json.dumps(settings.search_space().to_dict(), indent=2), "utf-8")
    log = folder / f"{settings.study}.log"
    command = build_command(settings, space_file, workers, storage_url)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "AUTOML_HOME": str(store.runs_home()),
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(_ROOT),
            start_new_session=True,
        )
    record = LaunchRecord(settings.study, process.pid, time.time(), str(log), command)
    _record_path(settings.study).write_text(json.dumps(record.__dict__), "utf-8")
    return record


def stop_search(study: str, grace_seconds: float = 10.0) -> bool:
    """Stops a launched search and every worker it spawned (the whole process group).

    SIGINT first, so interrupted trials are queued for retry; SIGKILL for whatever is still
    running after ``grace_seconds``.

    Args:
        study: The study whose search to stop.
        grace_seconds: Seconds to wait before SIGKILL. Defaults to 10.

    Returns:
        True if a running search was stopped, False if none was running.
    """
    record = read_record(study)
    if record is None or not _alive(record.pid):
        return False
    try:
        os.killpg(record.pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    deadline = time.time() + grace_seconds
    while time.time() < deadline and _group_alive(record.pid):
        time.sleep(0.2)
        _alive(record.pid)  # reap the leader if it is our child
    if _group_alive(record.pid):
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
        _alive(record.pid)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process of the group is left."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields_ = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields_[2]) == pgid and fields_[0] != "Z":
            return True
    return False


def log_tail(study: str, lines: int = 15) -> str:
    """The last lines of a launched search's output ('' when there is none)."""
    record = read_record(study)
    if record is None:
        return ""
    try:
        text = Path(record.log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [
        line
        for line in text.splitlines()
        if "absl::InitializeLog" not in line and "oneDNN custom operations" not in line
    ]
    return "\n".join(kept[-lines:])


@dataclass(frozen=True)
class SearchProgress:
    """Where a study's search stands, read from its storage and launch record.

    Attributes:
        study: The study.
        running: Whether its launched process still runs.
        exists: Whether the study is in the storage yet.
        budget: Trials the search will finish (None before the study exists).
        done: Trials finished (complete, pruned, failed for a reason of their own).
        states: Count of trials per state name.
        live: ``{"trial", "epoch", "loss", "val_loss", "max_epochs"}`` of each running trial.
        error: The error line of a launch that ended with one, or ''.
    """

    study: str
    running: bool
    exists: bool
    budget: int | None = None
    done: int = 0
    states: dict[str, int] = field(default_factory=dict)
    live: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    @property
    def fraction(self) -> float:
        """Share of the budget done, in [0, 1]."""
        if not self.budget:
            return 0.0
        return min(1.0, self.done / self.budget)


def search_progress(study: str, storage_url: str | None = None) -> SearchProgress:
    """Reads the progress of a study's search (cheap enough to poll every second or two).

    Args:
        study: The study's name.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.

    Returns:
        The progress.
    """
    running = is_running(study)
    error = ""
    if not running:
        errors = [line for line in log_tail(study, 40).splitlines() if line.startswith("error:")]
        error = errors[-1] if errors else ""
    if study not in store.study_names(storage_url):
        return SearchProgress(study, running, False, error=error)
    loaded = store.load_study(study, storage_url)
    try:
        settings = study_settings(loaded)
        budget, max_epochs = settings.trial_budget(), settings.max_epochs
    except StorageError:
        budget, max_epochs = None, None
    states: dict[str, int] = {}
    live, done = [], 0
    for trial in loaded.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
        finished = trial.state in (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
        )
        if finished or (
            trial.state == optuna.trial.TrialState.FAIL and FAIL_REASON_ATTR in trial.user_attrs
        ):
            done += 1
        elif trial.state == optuna.trial.TrialState.RUNNING:
            curves = trial.user_attrs.get(LIVE_ATTR, {})
            live.append(
                {
                    "trial": trial.number,
                    "epoch": curves.get("epoch", 0),
                    "loss": curves.get("loss", []),
                    "val_loss": curves.get("val_loss", []),
                    "max_epochs": max_epochs,
                    "params": dict(trial.params),
                }
            )
    return SearchProgress(study, running, True, budget, done, states, live, error)


def default_study_name(dataset: str, strategy: str) -> str:
    """A fresh, valid study name for a dataset and strategy (``<dataset>-<strategy>-<time>``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(dataset).stem)[:40].strip(".-") or "data"
    return f"{stem}-{strategy}-{time.strftime('%m%d-%H%M%S')}"


def elapsed_text(seconds: float) -> str:
    """Seconds as ``1h 02m``, ``3m 05s`` or ``12s``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def running_studies() -> list[str]:
    """Studies of this runs directory whose launched search is running now, newest first."""
    folder = launches_dir()
    if not folder.is_dir():
        return []
    records = [read_record(p.stem) for p in folder.glob("*.json") if ".space" not in p.name]
    alive = [r for r in records if r is not None and _alive(r.pid)]
    return [r.study for r in sorted(alive, key=lambda r: r.started, reverse=True)]
