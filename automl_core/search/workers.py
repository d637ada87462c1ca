"""The worker processes of one search: spawning them, stopping them, and what they share.

:func:`automl_core.search.runner.run_search` spawns ``python -m automl_core worker`` children
with :func:`spawn_worker`, stops them with :func:`stop_workers` (SIGINT, then SIGKILL), and
re-queues the trials they left running with :func:`requeue_orphans`. Launches of whole
searches from the dashboard (:mod:`automl_core.hosting.processes`) build on the same child
environment and log reading.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna

from automl_core import limits
from automl_core.errors import ConfigError
from automl_core.storage import store
from automl_core.storage.trials import RETRY_ATTR, TrialRecord, touch_study

# the folder that holds the automl_core package: the child processes import it from there
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# a worker process ends after this many trials, or once it has grown by WORKER_GROWTH_MIB,
# and a fresh one takes over: TensorFlow keeps ~10 MB per trained model even after
# clear_session(), so a long-lived process would grow. Growth, not a count, is the usual
# limit: a multi-fidelity search runs many short trials, and each new process costs seconds
TRIALS_PER_PROCESS = int(os.environ.get("AUTOML_TRIALS_PER_PROCESS", "200"))
WORKER_GROWTH_MIB = float(os.environ.get("AUTOML_WORKER_GROWTH_MIB", "600"))
# environment variable naming the search run a pre-started worker waits for
WORKER_RUN_ENV = "AUTOML_WORKER_RUN"
# where a search's workers run: "process" (child processes, the default) or "inline" (in the
# search's own process, one trial after another: for a debugger, and for tests of the search
# logic, which then skip each worker's TensorFlow start-up)
WORKER_POOL_ENV = "AUTOML_WORKER_POOL"
WORKER_POOLS = ("process", "inline")
# lines of native start-up noise (absl, oneDNN, TF's C++ logging) that say nothing to a user
_NOISE_PREFIXES = ("I0000", "W0000", "WARNING: All log")
_NOISE_SNIPPETS = ("absl::InitializeLog", "oneDNN custom operations")


def log_lines(path: Path | str) -> list[str]:
    """The meaningful lines of a process's log ('' lines and start-up noise dropped).

    Args:
        path: The log file.

    Returns:
        The lines, oldest first; empty when the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [
        line
        for line in text.splitlines()
        if line.strip()
        and not line.startswith(_NOISE_PREFIXES)
        and not any(snippet in line for snippet in _NOISE_SNIPPETS)
    ]


# --- workers of one search ---------------------------------------------------------------


# a worker process (TensorFlow, a model, the data) holds about this much memory
WORKER_MEMORY_GIB = 1.0
# environment variable: the pid of the supervisor that started a worker
SUPERVISOR_PID_ENV = "AUTOML_SUPERVISOR_PID"


def machine_worker_cap() -> tuple[int, str]:
    """The most workers this machine can run at once, and why: two per CPU core, and one per
    :data:`WORKER_MEMORY_GIB` of memory."""
    cores = os.cpu_count() or 1
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (OSError, ValueError):
        memory_gib = float("inf")
    by_memory = max(1, int(memory_gib / WORKER_MEMORY_GIB))
    if by_memory < 2 * cores:
        return by_memory, f"{memory_gib:.0f} GiB of memory at ~{WORKER_MEMORY_GIB:g} GiB a worker"
    return 2 * cores, f"{cores} CPU cores, two workers each"


def check_workers(workers: object) -> int:
    """Checks a number of worker processes against ``max_workers`` and this machine.

    Raises:
        ConfigError: It is not a positive integer, or more than the machine can run.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got workers={workers!r}")
    limit = limits.get("max_workers")
    if workers > limit:
        raise ConfigError(
            f"workers={workers} is more than the {limit} allowed (AUTOML_MAX_WORKERS); "
            "start workers on other machines with `worker --study` instead"
        )
    cap, why = machine_worker_cap()
    if workers > cap:
        raise ConfigError(
            f"workers={workers} is more than this machine can run at once: at most {cap} "
            f"({why}); start workers on other machines with `worker --study` instead"
        )
    return workers


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises KeyboardInterrupt; later ones
    are ignored. The previous handlers come back after it.

    Set by every supervisor and worker itself, so that Stop and Ctrl-C work however the
    process was started (a background job of a shell starts with SIGINT ignored). A second
    interrupt during cleanup would otherwise leave a trial RUNNING instead of re-queued.
    Outside the main thread (where handlers cannot be set) it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in signals}

    def handler(signum, frame):
        for number in signals:
            signal.signal(number, signal.SIG_IGN)
        raise KeyboardInterrupt

    for number in signals:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action if action is not None else signal.SIG_DFL)


def die_with_parent() -> None:
    """Makes the kernel interrupt this worker (SIGINT) when its supervisor dies, even by
    SIGKILL, so no worker trains on alone; exits at once if the supervisor is already gone.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere :func:`supervisor_gone` is checked
    between trials instead.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if supervisor_gone():
        raise KeyboardInterrupt


def supervisor_gone() -> bool:
    """Whether this worker's supervisor (:data:`SUPERVISOR_PID_ENV`) is no longer its parent."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV, "")
    return supervisor.isdigit() and os.getppid() != int(supervisor)


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of a worker process (this one by default), as recorded on its trials."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def requeue(study: optuna.Study, number: int, params: dict) -> None:
    """Queues a trial's parameters again, marked as a retry of that trial."""
    if params:
        study.enqueue_trial(params, user_attrs={RETRY_ATTR: number})


def requeue_orphans(study: optuna.Study, workers: set[str]) -> int:
    """Fails and queues again the RUNNING trials of worker processes that are gone.

    Used after a supervisor stopped its workers: a worker interrupted at an awkward moment
    may leave its trial RUNNING, which heartbeats would only fix a minute later.

    Returns:
        How many trials were queued again.
    """
    queued = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if TrialRecord.from_frozen(trial).worker in workers:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            requeue(study, trial.number, trial.params)
            queued += 1
    if queued:
        touch_study(study)
    return queued


class InterruptHold:
    """Holds SIGINT and SIGTERM back inside the block until :meth:`release` (or its end).

    A worker's trial is created by ``study.ask()`` and only then names its worker; an
    interrupt between the two would leave a RUNNING trial that no one can tell is orphaned,
    so the supervisor could not queue it again. Held signals are delivered, to whatever
    handler was set before, on :meth:`release` or when the block ends. Outside the main
    thread (where handlers cannot be set) it holds nothing.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self._held: list[int] = []

    def __enter__(self) -> InterruptHold:
        if threading.current_thread() is threading.main_thread():
            self._held = []
            self._previous = {number: signal.getsignal(number) for number in self._SIGNALS}
            for number in self._SIGNALS:
                signal.signal(number, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self._held.append(signum)

    def release(self) -> None:
        """Restores the earlier handlers and delivers the first held signal, if any."""
        previous, self._previous = self._previous, {}
        for number, action in previous.items():
            signal.signal(number, action)
        if previous and self._held:
            signal.raise_signal(self._held[0])

    def __exit__(self, *exc_info) -> None:
        self.release()


def run_cache_path(study_name: str, run: str) -> Path:
    """Where a search run leaves its split arrays for its workers:
    ``<runs>/cache/<study>-<run token>.npz``."""
    return store.runs_home() / "cache" / f"{study_name}-{run}.npz"


def run_token() -> str:
    """A new search run's token: ``<host>.<pid>.<random>``, so that a cache file names the
    process that owns it (see :func:`sweep_stale_caches`)."""
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:40] or "host"
    return f"{host}.{os.getpid()}.{uuid.uuid4().hex[:12]}"


def sweep_stale_caches() -> list[Path]:
    """Removes split arrays left by search runs of this host whose process is gone (a killed
    search cannot remove its own), and half-written ones older than a day.

    Returns:
        The files removed.
    """
    folder = run_cache_path("x", "x").parent
    host = run_token().split(".", 1)[0]
    removed = []
    try:
        files = list(folder.glob("*.npz"))
    except OSError:
        return removed
    for path in files:
        parts = path.name.removesuffix(".partial.npz").removesuffix(".npz").rsplit("-", 1)
        token = parts[-1].split(".") if len(parts) == 2 else []
        try:
            if len(token) == 3 and token[0] == host and token[1].isdigit():
                if process_alive(int(token[1])):
                    continue
            elif not (path.name.endswith(".partial.npz") and _older_than(path, 86_400)):
                continue  # another host's, or from before run tokens named their process
            path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _older_than(path: Path, seconds: float) -> bool:
    return time.time() - path.stat().st_mtime > seconds


def worker_pool() -> str:
    """Where this machine's searches run their workers (:data:`WORKER_POOL_ENV`).

    Raises:
        ConfigError: The variable holds something other than one of :data:`WORKER_POOLS`.
    """
    pool = os.environ.get(WORKER_POOL_ENV, "").strip() or WORKER_POOLS[0]
    if pool not in WORKER_POOLS:
        raise ConfigError(
            f"{WORKER_POOL_ENV}={pool!r} is not a worker pool; expected one of "
            + ", ".join(WORKER_POOLS)
        )
    return pool


def worker_log_path(study_name: str, index: int) -> Path:
    """Where a supervised worker's stderr goes: ``<runs>/logs/<study>-worker-<index>.log``."""
    name = store.validate_study_name(study_name)
    return store.runs_home() / "logs" / f"{name}-worker-{index}.log"


def spawn_worker(
    study_name: str, storage_url: str | None, index: int, run: str | None = None
) -> subprocess.Popen:
    """Starts a quiet ``python -m automl_core worker`` for a study as a child process.

    Its stderr (TensorFlow's start-up chatter included) goes to :func:`worker_log_path`.

    Args:
        study_name: The study.
        storage_url: Its storage.
        index: The worker's index in its search (log name, seed offset).
        run: A search run's token: the worker imports TensorFlow at once, then waits until
            the study carries this token (:data:`~automl_core.storage.trials.RUN_ATTR`), so it can
            be started before the study is prepared. Defaults to None (no wait).
    """
    command = [
        sys.executable, "-m", "automl_core", "worker", "--study", study_name,
        "--seed-offset", str(index), "--max-trials", str(TRIALS_PER_PROCESS), "--quiet",
    ]  # fmt: skip
    log = worker_log_path(study_name, index)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = child_environment(storage_url)
    env[SUPERVISOR_PID_ENV] = str(os.getpid())
    if run:
        env[WORKER_RUN_ENV] = run
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def resident_mib() -> float:
    """This process's resident memory in MiB (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def last_error_line(study_name: str, index: int) -> str:
    """The last meaningful line a worker wrote to its log (its error), or ''."""
    lines = log_lines(worker_log_path(study_name, index))
    return lines[-1].strip() if lines else ""


def stop_workers(children: list[subprocess.Popen], wait_seconds: float = 30.0) -> None:
    """Stops worker processes: SIGINT (they queue their trial again), then SIGKILL."""
    for child in children:
        # returncode, not poll(): an inline worker not yet run is stopped, not run; a process
        # that ended unnoticed is left alone by send_signal, which polls first
        if child.returncode is None:
            child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(timeout=wait_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def launches_dir() -> Path:
    """The folder of launch records and logs: ``<runs>/launches``."""
    return store.runs_home() / "launches"


def child_environment(storage_url: str | None) -> dict[str, str]:
    """This process's environment plus what a search or worker child needs.

    Passing the storage URL here rather than as an argument keeps a password in it out of
    process listings and log files.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTOML_HOME": str(store.runs_home())}
    if storage_url:
        env["AUTOML_STORAGE"] = storage_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def study_run_lock(study: str):
    """Holds an exclusive lock on starting a search of ``study`` on this machine, so that of
    two searches started together the second sees the first's run (see
    :func:`automl_core.search.runner.live_run`)."""
    with launches_lock(f"{store.validate_study_name(study)}.run.lock"):
        yield


@contextlib.contextmanager
def launches_lock(filename: str):
    """Holds an exclusive ``flock`` on ``<runs>/launches/<filename>``, across threads and
    processes of this machine (the launch and run locks of searches)."""
    folder = launches_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / filename, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
