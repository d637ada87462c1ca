"""Where studies and their artifacts live.

Studies are Optuna studies in an RDB storage: the embedded default is the SQLite file
``studies.db`` in the runs directory (``AUTOML_HOME``, default ``./runs``); any SQLAlchemy URL
Optuna accepts works too (``--storage`` / ``AUTOML_STORAGE``). Each finished trial's model
(``.keras``), history and metrics are files under an artifact root (``AUTOML_ARTIFACTS``,
default ``<runs>/artifacts``), in ``<study>/trial_<number>/``; the trial row records that
relative folder and the study records the root it was created with.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna

from automl_core.errors import ArtifactMissing, ConfigError, StorageError
from automl_core.trials import ARTIFACT_ATTR

STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ARTIFACT_ROOT_ATTR = "artifact_root"
SETTINGS_ATTR = "settings"


_OPEN_LOCK = threading.Lock()


def _heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds; ``AUTOML_HEARTBEAT_SECONDS`` shortens both."""
    interval = int(os.environ.get("AUTOML_HEARTBEAT_SECONDS", "20"))
    return interval, max(2 * interval, 3)


def runs_home() -> Path:
    """The runs directory: ``AUTOML_HOME`` or ``./runs``."""
    return Path(os.environ.get("AUTOML_HOME", "runs")).expanduser().resolve()


def default_storage_url() -> str:
    """``AUTOML_STORAGE`` if set, else the SQLite file ``studies.db`` in the runs directory."""
    return os.environ.get("AUTOML_STORAGE") or f"sqlite:///{runs_home() / 'studies.db'}"


def artifact_root() -> Path:
    """The folder trial artifacts are written to: ``AUTOML_ARTIFACTS`` or ``<runs>/artifacts``."""
    configured = os.environ.get("AUTOML_ARTIFACTS")
    return Path(configured).expanduser().resolve() if configured else runs_home() / "artifacts"


def validate_study_name(name: str) -> str:
    """Checks that a study name is safe as a folder name and in a URL.

    Args:
        name: The proposed name.

    Returns:
        The name, unchanged.

    Raises:
        ConfigError: The name is empty, too long, or has characters other than letters,
            digits, ``.``, ``_`` and ``-`` (path separators and HTML included).
    """
    if not isinstance(name, str) or not STUDY_NAME_PATTERN.match(name) or ".." in name:
        raise ConfigError(
            f"invalid study name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separators, spaces or HTML)"
        )
    return name


def _prepare_sqlite(url: str) -> None:
    """Creates the SQLite file's folder and switches it to WAL so readers never block writers."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with sqlite3.connect(path, timeout=60) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise StorageError(f"storage '{url}' cannot be opened as SQLite ({exc})") from exc


def _retry_callback():
    """Optuna's callback that re-queues a heartbeat-stale trial (at most three times)."""
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry = retry or optuna.storages.RetryFailedTrialCallback
    return retry(max_retry=3)


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """Opens (and creates if needed) the study storage at a SQLAlchemy URL.

    SQLite waits up to 60 s for a lock instead of failing with "database is locked", and
    runs in WAL mode. Trials send a heartbeat, so a killed worker's trial is failed and
    retried by the next worker instead of staying RUNNING forever.

    Args:
        url: A SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``). Defaults to
            :func:`default_storage_url`.

    Returns:
        The storage, shared within this process.

    Raises:
        StorageError: The URL is malformed or the database is unreachable.
    """
    with _OPEN_LOCK:  # two threads creating one database's tables at once would collide
        return _open_storage(url or default_storage_url())


@functools.lru_cache(maxsize=8)
def _open_storage(url: str) -> optuna.storages.RDBStorage:
    """Opens one storage per URL and process (engines are expensive; they are thread-safe)."""
    if "://" not in url:
        raise StorageError(
            f"malformed storage URL {url!r}; expected a SQLAlchemy URL such as "
            "sqlite:///runs/studies.db or postgresql://user@host/db"
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        _prepare_sqlite(url)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            # heartbeats are marked experimental, yet they are what keeps killed trials retried
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=_heartbeat_settings()[0],
                grace_period=_heartbeat_settings()[1],
                heartbeat_stale_trial_callback=_retry_callback(),
            )
    except Exception as exc:  # SQLAlchemy's ArgumentError, OperationalError, ImportError...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"storage {url!r} is unreachable or malformed ({first_line})") from exc


def study_names(storage_url: str | None = None) -> list[str]:
    """Names of every study in a storage, oldest first."""
    storage = open_storage(storage_url)
    return [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]


def load_study(name: str, storage_url: str | None = None) -> optuna.Study:
    """Loads an existing study.

    Raises:
        ConfigError: The name is invalid.
        StorageError: No study of that name exists in the storage.
    """
    validate_study_name(name)
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = study_names(storage_url)
        raise StorageError(
            f"no study named {name!r} in storage {storage_url or default_storage_url()!r}; "
            f"existing studies: {', '.join(known) if known else 'none'}"
        ) from None


def trial_artifact_dir(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Path:
    """The folder of a trial's artifacts, found from its storage row.

    The study's recorded root is tried first, then this process's :func:`artifact_root`
    (a shared folder mounted elsewhere on this machine).

    Raises:
        ArtifactMissing: The trial has no artifacts (it failed, was pruned or is running).
    """
    relative = trial.user_attrs.get(ARTIFACT_ATTR)
    if not relative:
        raise ArtifactMissing(
            f"trial {trial.number} of study {study.study_name!r} has no saved model "
            f"(state {trial.state.name})"
        )
    roots = [study.user_attrs.get(ARTIFACT_ROOT_ATTR), str(artifact_root())]
    for root in roots:
        if root and (Path(root) / relative / "model.keras").is_file():
            return Path(root) / relative
    raise ArtifactMissing(
        f"the model file of trial {trial.number} of study {study.study_name!r} is missing "
        f"(looked in {', '.join(str(Path(r) / relative) for r in roots if r)})"
    )


def save_trial_artifacts(
    root: Path, study_name: str, number: int, model, history: dict, metrics: dict, config: dict
) -> str:
    """Writes a trial's model, history, metrics and configuration, all or nothing.

    Files go to a temporary folder first and are moved into place in one rename, so a crash
    never leaves half a trial.

    Args:
        root: The artifact root.
        study_name: The study's (validated) name.
        number: The trial number.
        model: The trained ``keras.Model`` (the autoencoder).
        history: Per-epoch losses.
        metrics: The trial's metrics.
        config: The trial's configuration.

    Returns:
        The trial folder relative to ``root``, as stored in the trial row.
    """
    relative = f"{validate_study_name(study_name)}/trial_{number:05d}"
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".trial_{number:05d}_", dir=target.parent))
    model.save(staging / "model.keras")
    for filename, payload in (
        ("history.json", history),
        ("metrics.json", metrics),
        ("config.json", config),
    ):
        (staging / filename).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return relative


def load_trial_model(study: optuna.Study, number: int):
    """Loads a trial's trained autoencoder with Keras' ``safe_mode``.

    Args:
        study: The study.
        number: The trial number.

    Returns:
        The ``keras.Model`` named ``autoencoder`` (see ``automl_core.models``).

    Raises:
        ArtifactMissing: The trial has no model, or its file is gone or unreadable.
    """
    import keras

    trial = get_trial(study, number)
    folder = trial_artifact_dir(study, trial)
    try:
        return keras.models.load_model(folder / "model.keras", safe_mode=True, compile=False)
    except Exception as exc:
        raise ArtifactMissing(
            f"the model file of trial {number} of study {study.study_name!r} cannot be read ({exc})"
        ) from exc


def load_trial_history(study: optuna.Study, number: int) -> dict[str, list[float]]:
    """A finished trial's per-epoch losses (``loss``, ``val_loss``)."""
    trial = get_trial(study, number)
    folder = trial_artifact_dir(study, trial)
    return json.loads((folder / "history.json").read_text(encoding="utf-8"))


def get_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """One trial of a study by number.

    Raises:
        ConfigError: No trial has that number.
    """
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.number == number:
            return trial
    raise ConfigError(
        f"study {study.study_name!r} has no trial {number}; trial numbers run 0..{len(trials) - 1}"
    )


def install_study(
    source_storage_url: str,
    source_artifact_root: Path,
    study_name: str,
    storage_url: str | None = None,
) -> bool:
    """Copies a study and its artifacts into a storage (e.g. the bundled demo on first start).

    Args:
        source_storage_url: The storage holding the study (e.g. ``sqlite:///assets/demo/studies.db``).
        source_artifact_root: The artifact root of that storage.
        study_name: The study to copy.
        storage_url: The target storage. Defaults to :func:`default_storage_url`; artifacts
            go to :func:`artifact_root`.

    Returns:
        True if the study was copied, False if the target already had it.

    Raises:
        StorageError: The source has no such study.
    """
    if study_name in study_names(storage_url):
        return False
    with tempfile.TemporaryDirectory() as scratch:
        source = _read_only_source(source_storage_url, Path(scratch))
        if study_name not in [s.study_name for s in optuna.get_all_study_summaries(source, False)]:
            raise StorageError(f"no study named {study_name!r} in {source_storage_url!r}")
        source_folder = Path(source_artifact_root) / study_name
        target_folder = artifact_root() / study_name
        if source_folder.is_dir() and not target_folder.exists():
            shutil.copytree(source_folder, target_folder)
        optuna.copy_study(
            from_study_name=study_name, from_storage=source, to_storage=open_storage(storage_url)
        )
        source.engine.dispose()
    copied = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    copied.set_user_attr(ARTIFACT_ROOT_ATTR, str(artifact_root()))
    return True


def _read_only_source(url: str, scratch: Path) -> optuna.storages.RDBStorage:
    """A storage to copy from; a SQLite file is copied first so the original is never touched."""
    if url.startswith("sqlite:///"):
        original = Path(url.split(":///", 1)[1])
        if not original.is_file():
            raise StorageError(f"no SQLite file at {original}")
        copy = scratch / original.name
        shutil.copyfile(original, copy)
        url = f"sqlite:///{copy}"
    try:
        return optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception as exc:
        raise StorageError(f"storage {url!r} cannot be read ({exc})") from exc
