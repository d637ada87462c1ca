"""Searches launched from the dashboard, and stopping them.

The dashboard starts a whole ``search`` command in its own process group with
  :func:`launch_search`, recorded under ``<runs>/launches/<study>.<storage key>.json`` so a
  reload, another browser session or another dashboard process finds it; :func:`stop_search`
  stops the group. Records are kept per storage (:func:`storage_key`): two storages sharing
  one runs folder never see, or stop, each other's searches of a study of the same name.
  A launch and a stop take the acting user (:class:`automl_core.hosting.access.User`): a launch records its owner,
  and the role, ownership and quotas of a shared dashboard are checked here, in the core.

Logs are read through :func:`automl_core.search.workers.log_lines`, which drops TensorFlow's start-up chatter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from automl_core import limits
from automl_core.errors import ConfigError, PermissionDenied
from automl_core.hosting import access
from automl_core.hosting.uploads import user_uploads_dir
from automl_core.model.datasets import DATASETS
from automl_core.search.preflight import check_search
from automl_core.search.workers import (
    PACKAGE_PARENT,
    check_workers,
    child_environment,
    launches_dir,
    launches_lock,
    log_lines,
    requeue_orphans,
    sweep_stale_caches,
    worker_id,
)
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings

# the lines of a search's output that say what happened: its start and number format, each
# trial, the end of the space, the best trial, warnings and errors (not the leaderboard
# table, the best configuration's listing nor filter matrices, which the pages show better)
_SUMMARY_LINE = re.compile(
    r"^(study |Precision |trial |Best trial|the search space is exhausted|nothing to train"
    r"|stopped|error|Traceback|WARNING|Warning)"
    r"|^(\S.*\s)?[\w.]*(Error|Exception|Warning):"
)
# the most of a log :func:`log_text` returns (its end)
LOG_TEXT_BYTES = 2 * 1024 * 1024
# a launch's search settings beside its record: ``<launches>/<study>-<storage>.settings.json``
SETTINGS_SUFFIX = ".settings.json"


# --- searches launched from the dashboard --------------------------------------------------


@dataclass(frozen=True)
class LaunchRecord:
    """A search process started by :func:`launch_search`.

    Attributes:
        study: The study it runs.
        pid: Its process id (also its process-group id).
        started: Unix time of the launch.
        log: Path of its output log.
        command: The command line.
        owner: The user name of who launched it (``local`` for the local-mode user).
        storage: The :func:`storage_key` of the study's storage ('' in records written before
            records were kept per storage: those belong to the default storage).
    """

    study: str
    pid: int
    started: float
    log: str
    command: list[str] = field(default_factory=list)
    owner: str = access.LOCAL_ADMIN.name
    storage: str = ""


def storage_key(storage_url: str | None = None) -> str:
    """A short name of a storage for file names: 12 hex digits of a hash of where it is.

    A SQLite file is known by its absolute path, another storage by its URL without the
    password, so the key is the same however the URL is spelled or the password changes.

    Args:
        storage_url: The storage. Defaults to :func:`store.default_storage_url`.

    Returns:
        The key.
    """
    url = storage_url or store.default_storage_url()
    path = store.sqlite_path(url)
    where = f"sqlite:{path.expanduser().resolve()}" if path is not None else store.safe_url(url)
    return hashlib.sha256(where.encode("utf-8")).hexdigest()[:12]


def _launch_file(study: str, storage_url: str | None, suffix: str) -> Path:
    """``<launches>/<study>.<storage key><suffix>``: one storage's launch files of a study."""
    name = store.validate_study_name(study)
    return launches_dir() / f"{name}.{storage_key(storage_url)}{suffix}"


def _record_path(study: str, storage_url: str | None = None) -> Path:
    return _launch_file(study, storage_url, ".json")


def _load_record(path: Path) -> LaunchRecord | None:
    """The launch record in a file, or None when it is missing or unreadable."""
    try:
        return LaunchRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _belongs_to(record: LaunchRecord, key: str) -> bool:
    """Whether a record is of the storage with this key (an old record: the default one)."""
    return record.storage == key or (not record.storage and key == storage_key())


def read_record(study: str, storage_url: str | None = None) -> LaunchRecord | None:
    """The last launch of a study of one storage from this runs directory, or None.

    Args:
        study: The study.
        storage_url: Its storage. Defaults to :func:`store.default_storage_url`; a record
            written before records were kept per storage (``<study>.json``) is the default
            storage's.

    Returns:
        The record, or None when this storage has no launch of the study.
    """
    key = storage_key(storage_url)
    paths = [_record_path(study, storage_url)]
    if key == storage_key():
        paths.append(launches_dir() / f"{store.validate_study_name(study)}.json")
    for path in paths:
        record = _load_record(path)
        if record is not None and record.study == study and _belongs_to(record, key):
            return record
    return None


def forget_launch(study: str, storage_url: str | None = None) -> None:
    """Removes one storage's launch record, log and search-space file of a study.

    Args:
        study: The study.
        storage_url: Its storage. Defaults to :func:`store.default_storage_url` (whose
            files from before records were kept per storage go too).
    """
    names = [_launch_file(study, storage_url, "")]
    if storage_key(storage_url) == storage_key():
        names.append(launches_dir() / store.validate_study_name(study))
    for name in names:
        for suffix in (".json", ".log", SETTINGS_SUFFIX, ".space.json"):  # .space: before 2026-12
            name.with_name(name.name + suffix).unlink(missing_ok=True)


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


def is_running(study: str, storage_url: str | None = None) -> bool:
    """Whether a search launched for this study of this storage is still running.

    Args:
        study: The study.
        storage_url: Its storage. Defaults to :func:`store.default_storage_url`.
    """
    record = read_record(study, storage_url)
    return record is not None and _alive(record.pid)


def build_command(settings_file: Path, workers: int) -> list[str]:
    """The CLI command line that runs the search whose settings are in ``settings_file``
    (:meth:`SearchSettings.to_json`: the one serialisation a launch, its search process and
    the stored study share).

    The storage URL is not on it: it may hold a password, and command lines are visible to
    every user of the machine (``ps``) and are recorded in the launch record. It travels in
    the child's environment (``AUTOML_STORAGE``) instead.
    """
    return [
        sys.executable,
        "-m",
        "automl_core",
        "search",
        "--settings",
        str(settings_file),
        "--workers",
        str(workers),
    ]


@contextlib.contextmanager
def _launch_lock(study: str):
    """Holds an exclusive lock on the study's launch, across threads and processes.

    Check-then-start is not atomic by itself: two launches at the same moment would both
    see no running search. An ``flock`` on a per-study lock file serialises them, so the
    second sees the first's record and is refused.
    """
    with launches_lock(f"{store.validate_study_name(study)}.lock"):
        yield


@contextlib.contextmanager
def _all_launches_lock():
    """Holds the lock every launch takes, so quotas counted across studies stay true."""
    with launches_lock(".all.lock"):
        yield


def check_quotas(settings: SearchSettings, workers: int, actor: access.User) -> SearchSettings:
    """Checks a launch on a shared dashboard against the quotas (the local user has none).

    Quotas: ``max_concurrent_searches`` in total, ``max_searches_per_operator`` per user,
    ``max_workers_per_search``, ``max_trials_per_launch`` and ``max_launch_seconds``.

    Returns:
        The settings to launch: a launch without a trial budget or a timeout gets the
        quota's ``max_trials_per_launch`` and ``max_launch_seconds``.

    Raises:
        PermissionDenied: A quota would be exceeded; the message names it and its value.
    """
    if actor.source == access.LOCAL_ADMIN.source:
        return settings

    def refuse(what: str, name: str) -> PermissionDenied:
        limit = limits.LIMITS[name]
        return PermissionDenied(
            f"launch refused: {what}, over the quota of {limits.get(name)} {limit.unit} "
            f"({name}, {limit.env})"
        )

    if workers > limits.get("max_workers_per_search"):
        raise refuse(f"{workers} workers", "max_workers_per_search")
    most_trials = limits.get("max_trials_per_launch")
    if settings.trials is not None and settings.trials > most_trials:
        raise refuse(f"a budget of {settings.trials} trials", "max_trials_per_launch")
    most_seconds = limits.get("max_launch_seconds")
    if settings.timeout is not None and settings.timeout > most_seconds:
        raise refuse(f"a timeout of {settings.timeout:g} s", "max_launch_seconds")
    running = _running_records()  # every storage's: the machine is shared
    if len(running) >= limits.get("max_concurrent_searches"):
        raise refuse(f"{len(running) + 1} searches at once", "max_concurrent_searches")
    own = sum(r.owner == actor.name for r in running)
    if own >= limits.get("max_searches_per_operator"):
        raise refuse(f"{own + 1} searches of {actor.name} at once", "max_searches_per_operator")
    if settings.timeout is None:
        settings = replace(settings, timeout=float(most_seconds))
    if settings.trials is None and settings.trial_budget() > most_trials:
        settings = replace(settings, trials=most_trials)  # no budget asked: the quota's
    return settings


def _check_dataset(dataset: str, actor: access.User) -> None:
    """On a shared dashboard, a dataset is a registry name or one of the actor's uploads.

    A typed path (``../``, an absolute path, another user's upload) would let a visitor
    read files of the server: only the local user and admins may name any path.
    """
    if actor.source == access.LOCAL_ADMIN.source or actor.at_least("admin"):
        return

    if dataset in DATASETS:
        return
    folder = user_uploads_dir(actor).resolve()
    path = Path(dataset).resolve()
    if path.parent != folder or not path.is_file():
        raise PermissionDenied(
            f"dataset {dataset!r} is neither a registry dataset nor one of {actor.name}'s "
            "uploads; upload the file first"
        )


def _check_study_owner(settings: SearchSettings, storage_url: str | None, actor) -> None:
    """An operator of a shared dashboard resumes only studies they launched first."""
    if actor.source == access.LOCAL_ADMIN.source or actor.at_least("admin"):
        return
    record = read_record(settings.study, storage_url)
    if record is not None:
        access.check_allowed(actor, "resume", record.owner)
    elif settings.study in store.study_names(storage_url, create=False):
        raise PermissionDenied(
            f"study {settings.study!r} already exists and was not launched by {actor.name}; "
            "pick another study name"
        )


def launch_search(
    settings: SearchSettings,
    workers: int = 1,
    storage_url: str | None = None,
    actor: access.User | None = None,
) -> LaunchRecord:
    """Starts a search as its own process group and records it; returns at once.

    Args:
        settings: The search (checked with :func:`automl_core.search.preflight.check_search` first).
        workers: Worker processes. Defaults to 1.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.
        actor: Who launches it (recorded as the owner). Defaults to the local admin in
            local mode; required in shared mode.

    Returns:
        The launch record.

    Raises:
        PermissionDenied: The actor may not launch (a viewer), the study is someone else's,
            or a quota would be exceeded.
        ConfigError: A search of this study is already running, or the settings are invalid.
        DatasetError: The dataset cannot be loaded.
    """
    actor = access.check_allowed(access.resolve_actor(actor), "launch")
    check_workers(workers)
    store.validate_study_name(settings.study)
    with _all_launches_lock(), _launch_lock(settings.study):
        if is_running(settings.study, storage_url):
            raise ConfigError(
                f"a search of study {settings.study!r} is already running; stop it first or "
                "pick another study name"
            )
        _check_dataset(settings.dataset, actor)
        _check_study_owner(settings, storage_url, actor)
        settings = check_quotas(settings, workers, actor)

        check_search(settings, storage_url)
        settings_file = _launch_file(settings.study, storage_url, SETTINGS_SUFFIX)
        settings_file.write_text(settings.to_json(), "utf-8")
        log = _launch_file(settings.study, storage_url, ".log")
        command = build_command(settings_file, workers)
        env = {**child_environment(storage_url), "TF_CPP_MIN_LOG_LEVEL": "3"}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(PACKAGE_PARENT),
                start_new_session=True,
            )
        record = LaunchRecord(
            settings.study,
            process.pid,
            time.time(),
            str(log),
            command,
            actor.name,
            storage_key(storage_url),
        )
        _record_path(settings.study, storage_url).write_text(json.dumps(record.__dict__), "utf-8")
    return record


def stop_search(
    study: str,
    grace_seconds: float = 10.0,
    actor: access.User | None = None,
    storage_url: str | None = None,
) -> bool:
    """Stops a launched search and every worker it spawned (the whole process group).

    SIGINT first, so interrupted trials are queued for retry; SIGKILL for whatever is still
    running after ``grace_seconds``. Then, whatever moment the signals landed (a worker
    may swallow SIGINT inside a garbage-collection callback and be killed mid-trial), every
    trial still RUNNING under one of the group's processes is failed and queued again, the
    run's cached data is removed, and the launch log says what was done.

    Args:
        study: The study whose search to stop.
        grace_seconds: Seconds to wait before SIGKILL. Defaults to 10.
        actor: Who stops it: its owner or an admin. Defaults to the local admin in local
            mode; required in shared mode.
        storage_url: The study's storage. Defaults to :func:`store.default_storage_url`.

    Returns:
        True if a running search was stopped, False if none was running.

    Raises:
        PermissionDenied: The actor is a viewer, or an operator stopping another's search.
    """
    actor = access.resolve_actor(actor)
    record = read_record(study, storage_url)
    access.check_allowed(actor, "stop", record.owner if record else actor.name)
    if record is None or not _alive(record.pid):
        return False
    members = group_members(record.pid) | {record.pid}
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
    _clean_up_after_stop(record, members, storage_url)
    return True


def group_members(pgid: int) -> set[int]:
    """The ids of the processes of a process group (Linux ``/proc``; empty elsewhere)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # pgrp, after the name in parentheses and the state
                members.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return members


def _clean_up_after_stop(record: LaunchRecord, members: set[int], storage_url: str | None) -> None:
    """Fails and queues again the trials the stopped group left RUNNING, removes its cached
    data and writes one line to its launch log (best effort: storage errors are logged)."""
    worker_ids = {worker_id(pid) for pid in members}
    try:
        study = store.load_study(record.study, storage_url, create=False)
        queued = requeue_orphans(study, worker_ids)
        outcome = f"{queued} interrupted trial(s) failed and queued again"
    except Exception as exc:  # noqa: BLE001  (a dead storage must not hide the stop itself)
        outcome = f"its running trials could not be queued again ({type(exc).__name__})"
    removed = sweep_stale_caches()
    line = (
        f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] search stopped; {outcome}; "
        f"{len(removed)} cached data file(s) removed\n"
    )
    try:
        with open(record.log, "a", encoding="utf-8") as log:
            log.write(line)
    except OSError:
        pass


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


def log_tail(study: str, lines: int = 15, actor: access.User | None = None) -> str:
    """The last lines of a launched search's output ('' when there is none).

    Args:
        study: The study.
        lines: How many lines. Defaults to 15.
        actor: Who reads it: the search's owner or an admin. Defaults to the local admin in
            local mode; required in shared mode.

    Raises:
        PermissionDenied: The actor may not read this search's log.
    """
    actor = access.resolve_actor(actor)
    record = read_record(study)
    access.check_allowed(actor, "view_log", record.owner if record else actor.name)
    if record is None:
        return ""
    return "\n".join(log_lines(record.log)[-lines:])


def summary_lines(lines: list[str]) -> list[str]:
    """The lines of a search's output that say what happened (see ``_SUMMARY_LINE``)."""
    return [line for line in lines if _SUMMARY_LINE.match(line)]


def log_summary(study: str, lines: int = 15, actor: access.User | None = None) -> str:
    """The last lines of a launched search's output that say what happened: its start, each
    trial's result, the best trial, warnings and errors.

    Before any such line (a search still starting), the last lines of its output as they
    are. Same access as :func:`log_tail`.
    """
    actor = access.resolve_actor(actor)
    record = read_record(study)
    access.check_allowed(actor, "view_log", record.owner if record else actor.name)
    if record is None:
        return ""
    everything = log_lines(record.log)
    return "\n".join((summary_lines(everything) or everything)[-lines:])


def log_text(study: str, actor: access.User | None = None) -> str:
    """A launched search's whole output, as written (its last :data:`LOG_TEXT_BYTES`); ''
    when there is none. Same access as :func:`log_tail`."""
    actor = access.resolve_actor(actor)
    record = read_record(study)
    access.check_allowed(actor, "view_log", record.owner if record else actor.name)
    if record is None:
        return ""
    try:
        with open(record.log, "rb") as stream:
            stream.seek(max(0, os.fstat(stream.fileno()).st_size - LOG_TEXT_BYTES))
            return stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def launch_owner(study: str) -> str | None:
    """The user name of who last launched a study from this runs directory, or None."""
    record = read_record(study)
    return record.owner if record else None


def _running_records() -> list[LaunchRecord]:
    """The launch records of this runs directory whose search runs now, of every storage."""
    folder = launches_dir()
    if not folder.is_dir():
        return []
    records = [
        _load_record(p)
        for p in folder.glob("*.json")
        if not p.name.endswith((SETTINGS_SUFFIX, ".space.json"))
    ]
    return [r for r in records if r is not None and _alive(r.pid)]


def running_studies(storage_url: str | None = None) -> list[str]:
    """Studies of one storage whose search launched from this runs directory runs now.

    Args:
        storage_url: The storage. Defaults to :func:`store.default_storage_url`.

    Returns:
        The study names, newest launch first.
    """
    key = storage_key(storage_url)
    alive = [r for r in _running_records() if _belongs_to(r, key)]
    names = [r.study for r in sorted(alive, key=lambda r: r.started, reverse=True)]
    return list(dict.fromkeys(names))


def delete_study(name: str, storage_url: str | None = None, actor=None) -> None:
    """Deletes a study: its storage rows, its trials' artifacts and its launch records.

    Args:
        name: The study.
        storage_url: Its storage. Defaults to the embedded default.
        actor: Who deletes it (an admin; :class:`automl_core.hosting.access.User`). Defaults
            to the local admin in local mode; required in shared mode.

    Raises:
        PermissionDenied: The actor is not an admin.
        ConfigError: A search of the study is running (stop it first), or the name is invalid.
        StorageError: No such study.
    """
    access.check_allowed(access.resolve_actor(actor), "delete")
    store.validate_study_name(name)
    url = storage_url or store.default_storage_url()
    store.load_study(name, url, create=False)  # no such study: StorageError before anything
    if is_running(name, url):
        raise ConfigError(f"a search of study {name!r} is running; stop it before deleting")
    store.delete_study(name, url)
    forget_launch(name, url)  # this storage's launch files only
