"""Where studies and their artifacts live.

Studies are Optuna studies in an RDB storage: the embedded default is the SQLite file
``studies.db`` in the runs directory (``AUTOML_HOME``, default ``./runs``); any SQLAlchemy URL
Optuna accepts works too (``--storage`` / ``AUTOML_STORAGE``). Each finished trial's model
(``.keras``), history and metrics are files under an artifact root (``AUTOML_ARTIFACTS``,
default ``<runs>/artifacts``), in ``<study>/trial_<number>/``; the trial row records that
relative folder and the study records the root it was created with.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from automl_core.errors import ArtifactMissing, AutoMLError, ConfigError, StorageError
from automl_core.limits import PREVIEW_IMAGES
from automl_core.storage.trials import ARTIFACT_ATTR

STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ARTIFACT_ROOT_ATTR = "artifact_root"
ARTIFACT_KEY_ATTR = "artifact_key"
SETTINGS_ATTR = "settings"

# what the database layer raises when a storage cannot be opened or read
STORAGE_FAILURES: tuple[type[BaseException], ...] = (
    optuna.exceptions.StorageInternalError,
    sqlalchemy.exc.SQLAlchemyError,
    sqlite3.Error,
)
_PASSWORD_IN_URL = re.compile(r"(//[^/@:\s]*:)[^\s/]*@")
# the start of what looks like a URL: its scheme and the slashes after it (one, two or none)
_URL_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*:/*")
_PASSWORD_IN_QUERY = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)

_OPEN_LOCK = threading.Lock()

logger = logging.getLogger(__name__)


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
            digits, ``.``, ``_`` and ``-`` (path separators, HTML and line breaks included).
    """
    # fullmatch: with match(), the pattern's "$" would also accept a final newline
    if not isinstance(name, str) or not STUDY_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"invalid study name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separators, spaces or HTML)"
        )
    return name


def safe_url(url: str) -> str:
    """A storage URL fit for a message: its password, if any, shown as ``***``.

    Args:
        url: A SQLAlchemy URL, or any text given as one.

    Returns:
        The URL as SQLAlchemy renders it without its password. Text SQLAlchemy cannot parse,
        or whose user and password hold more than one ``@`` (which SQLAlchemy would split at
        the first, showing the rest of the password as the host), has whatever lies between
        ``scheme:[//]user:`` and the last ``@`` before the query masked instead (and a
        ``password=`` query value).
    """
    text = str(url)
    userinfo = _userinfo(text)
    if userinfo is not None and (userinfo[2].count("@") > 1 or not _parses(text)):
        # SQLAlchemy cannot parse it, or would take part of a password with an unescaped
        # "@" for the host: mask all between the scheme and the authority's last "@"
        start, end, _ = userinfo
        user, colon, _ = text[start:end].partition(":")
        text = text[:start] + (f"{user}:***" if colon else "***") + text[end:]
    else:
        try:
            text = make_url(text).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: mask by pattern below
            pass
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


def _parses(url: str) -> bool:
    """Whether SQLAlchemy parses a URL."""
    try:
        make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError, ValueError...: any failure to parse
        return False
    return True


def _userinfo(text: str) -> tuple[int, int, str] | None:
    """Where the user and password of a URL-like text lie: ``(start, end, authority)``, from
    after the scheme to the last ``@`` before the query (a password may hold ``/``, ``?`` is
    rare); None when it has no scheme, no ``@``, or a user without a password."""
    scheme = _URL_SCHEME.match(text)
    if scheme is None:
        return None
    start = scheme.end()
    authority = text[start:].split("?", 1)[0]
    end = authority.rfind("@")
    if end < 0 or (":" not in authority[:end] and "@" not in authority[:end]):
        return None
    return start, start + end, authority


def _hide_secrets(text: str, url: str) -> str:
    """``text`` with ``url`` shown as :func:`safe_url` and its password masked wherever it is."""
    text = text.replace(url, safe_url(url))
    secrets = []
    try:
        secrets.append(str(make_url(url).password or ""))
    except Exception:  # noqa: BLE001 - unparsable URL: the patterns below still apply
        pass
    userinfo = _userinfo(url)
    if userinfo is not None:  # what lies before the last "@", and each piece between "@"s
        start, end, _ = userinfo
        password = url[start:end].partition(":")[2] or url[start:end]
        secrets += [password, *password.split("@")]
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:  # shorter ones would mask ordinary letters
            text = text.replace(secret, "***")
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite storage URL, or None for other storages and in-memory databases.

    Args:
        url: A SQLAlchemy URL such as ``sqlite:///runs/studies.db``.

    Returns:
        The database file's path (relative paths stay relative).
    """
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def storage_exists(url: str | None = None) -> bool:
    """Whether a storage is there to read: False only for a SQLite file that does not exist.

    Args:
        url: A SQLAlchemy URL. Defaults to :func:`default_storage_url`.
    """
    path = sqlite_path(url or default_storage_url())
    return path is None or path.is_file()


def _failure_reason(exc: BaseException) -> str:
    """The first line of the driver's own words behind a database error (``file is not a
    database``), following SQLAlchemy's ``orig`` and Optuna's ``raise ... from``."""
    seen = exc
    for _ in range(10):
        orig = getattr(seen, "orig", None)
        deeper = orig if isinstance(orig, BaseException) else seen.__cause__
        if deeper is None or deeper is seen:
            break
        seen = deeper
    text = str(seen).strip()
    return text.splitlines()[0] if text else type(seen).__name__


def storage_error(exc: BaseException, url: str | None = None) -> StorageError:
    """A clear :class:`StorageError` for a failure to open or read a storage.

    The message names the SQLite file (or the URL without its password) and the driver's
    reason; no password reaches it.

    Args:
        exc: What the database layer raised (SQLAlchemy, ``sqlite3``, Optuna's
            ``StorageInternalError``, a missing driver...).
        url: The storage's URL. Defaults to :func:`default_storage_url`.

    Returns:
        The error to raise (``raise storage_error(exc, url) from exc``).
    """
    url = url or default_storage_url()
    reason = _hide_secrets(_failure_reason(exc), url)
    path = sqlite_path(url)
    if path is None:
        return StorageError(f"storage {safe_url(url)!r} is unreachable or malformed ({reason})")
    damaged = any(word in reason.lower() for word in ("not a database", "malformed", "corrupt"))
    hint = (
        "; the file is damaged or is not a study database: move it away, or point "
        "AUTOML_STORAGE / --storage at another one"
        if damaged
        else ""
    )
    return StorageError(f"the study database {path} cannot be used as SQLite ({reason}){hint}")


@contextlib.contextmanager
def storage_errors(url: str | None = None) -> Iterator[None]:
    """Turns database failures raised in the block into :func:`storage_error`'s StorageError.

    Args:
        url: The storage being read. Defaults to :func:`default_storage_url`.
    """
    try:
        yield
    except STORAGE_FAILURES as exc:
        raise storage_error(exc, url) from exc


def _prepare_sqlite(path: Path) -> None:
    """Creates the SQLite file's folder and switches it to WAL so readers never block writers."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"the folder {path.parent} of the study database cannot be created "
            f"({exc.strerror or exc}); expected a writable location (AUTOML_HOME / --storage)"
        ) from exc
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        # reading the mode takes no lock; setting it does, so only a new file is switched
        if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            connection.execute("PRAGMA journal_mode=WAL")


def _retry_callback():
    """Optuna's callback that re-queues a heartbeat-stale trial (at most three times)."""
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry = retry or optuna.storages.RetryFailedTrialCallback
    return retry(max_retry=3)


def _writable(path: Path) -> bool:
    """Whether this process may write a SQLite file and its folder (journals live beside it)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def open_storage(url: str | None = None, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Opens (and creates if needed) the study storage at a SQLAlchemy URL.

    SQLite waits up to 60 s for a lock instead of failing with "database is locked", and
    runs in WAL mode. Trials send a heartbeat, so a killed worker's trial is failed and
    retried by the next worker instead of staying RUNNING forever. Two processes creating
    one new database at once do not fail: the one that loses the race tries again.

    Args:
        url: A SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``). Defaults to
            :func:`default_storage_url`.
        create: Create a missing SQLite file, its folder and the tables. Commands that only
            read pass False: a missing SQLite file is then an error, and a file in a folder
            this process may not write is opened read-only. Defaults to True.

    Returns:
        The storage, shared within this process.

    Raises:
        StorageError: The URL is malformed, the database is unreachable or damaged, or
            (``create=False``) the SQLite file does not exist.
    """
    url = url or default_storage_url()
    path = sqlite_path(url)
    read_only = False
    if not create and path is not None:
        if not path.is_file():
            raise StorageError(
                f"no study database at {path}; expected an existing studies.db (run a search "
                "first, or point AUTOML_HOME / AUTOML_STORAGE / --storage at one)"
            )
        read_only = not _writable(path)
    with _OPEN_LOCK:  # two threads creating one database's tables at once would collide
        if read_only:
            return _open_read_only(url)
        return _open_storage(url)


# SQLite URI options of a file this process may not write: read-only mode works when the
# WAL's side files are there; otherwise the file is read as immutable (as of its last
# checkpoint), which needs no side file at all
_READ_ONLY_OPTIONS = ("mode=ro", "mode=ro&immutable=1")


def _open_read_only(url: str) -> optuna.storages.RDBStorage:
    """A SQLite file in a place this process cannot write, opened without writing anything."""
    failure: StorageError | None = None
    for options in _READ_ONLY_OPTIONS:
        try:
            return _open_storage(url, options)
        except StorageError as exc:
            failure = exc
    assert failure is not None
    raise failure


# words of a database error that mean another process was creating the same database
_CREATION_RACE = ("already exists", "unique constraint failed", "duplicate key", "is locked")
_RACE_RETRY_SECONDS = 30.0


def _is_creation_race(exc: BaseException) -> bool:
    """Whether an error looks like two processes creating one database's tables at once."""
    text = f"{exc} {_failure_reason(exc)}".lower()
    return any(words in text for words in _CREATION_RACE)


@functools.lru_cache(maxsize=8)
def _open_storage(url: str, read_only: str = "") -> optuna.storages.RDBStorage:
    """Opens one storage per URL and process (engines are expensive; they are thread-safe).

    A creation race (a table or version row made by another process between Optuna's check
    and its own ``CREATE``) is retried for a while with a growing pause, then reported.
    ``read_only`` holds SQLite URI options (``mode=ro``) for a file opened without writing.
    """
    if "://" not in url:
        raise StorageError(
            f"malformed storage URL {safe_url(url)!r}; expected a SQLAlchemy URL such as "
            "sqlite:///runs/studies.db or postgresql://user@host/db"
        )
    started = time.monotonic()
    for attempt in itertools.count(1):
        try:
            return _connect(url, read_only)
        except StorageError:
            raise
        except Exception as exc:  # SQLAlchemy's ArgumentError, OperationalError, ImportError...
            late = time.monotonic() - started > _RACE_RETRY_SECONDS
            if late or not _is_creation_race(exc):
                raise storage_error(exc, url) from exc
            time.sleep(min(0.1 * attempt, 1.0) + random.uniform(0, 0.1))
    raise AssertionError("unreachable")  # pragma: no cover


def _connect(url: str, read_only: str) -> optuna.storages.RDBStorage:
    """One attempt at opening a storage (see :func:`_open_storage`)."""
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if url.startswith("sqlite") and read_only and path is not None:
        # a URI names the file (any character percent-encoded) with read-only options;
        # SQLAlchemy would decode an encoded path in the URL itself
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?{read_only}"
        engine_kwargs["creator"] = functools.partial(
            sqlite3.connect, uri, uri=True, timeout=60, check_same_thread=False
        )
    elif url.startswith("sqlite"):
        if path is not None:
            _prepare_sqlite(path)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    with warnings.catch_warnings():
        # heartbeats are marked experimental, yet they are what keeps killed trials retried
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            skip_table_creation=bool(read_only),
            heartbeat_interval=_heartbeat_settings()[0],
            grace_period=_heartbeat_settings()[1],
            heartbeat_stale_trial_callback=_retry_callback(),
        )


def study_names(storage_url: str | None = None, *, create: bool = True) -> list[str]:
    """Names of every study in a storage, oldest first.

    Args:
        storage_url: The storage. Defaults to :func:`default_storage_url`.
        create: As in :func:`open_storage`; with False, a SQLite file that does not exist
            holds no study (and is not created). Defaults to True.

    Raises:
        StorageError: The storage is unreachable, malformed or damaged.
    """
    url = storage_url or default_storage_url()
    if not create and not storage_exists(url):
        return []
    storage = open_storage(url, create=create)
    with storage_errors(url):
        # not get_all_study_summaries: it reads every trial of every study (minutes at 10,000)
        return optuna.get_all_study_names(storage)


def load_study(name: str, storage_url: str | None = None, *, create: bool = True) -> optuna.Study:
    """Loads an existing study.

    Args:
        name: The study's name.
        storage_url: Its storage. Defaults to :func:`default_storage_url`.
        create: As in :func:`open_storage`: read-only callers pass False, so a missing
            SQLite file is reported instead of created. Defaults to True.

    Raises:
        ConfigError: The name is invalid.
        StorageError: The storage is missing, unreachable or damaged, or holds no study of
            that name.
    """
    validate_study_name(name)
    url = storage_url or default_storage_url()
    storage = open_storage(url, create=create)
    try:
        with storage_errors(url):
            return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = study_names(url, create=create)
        raise StorageError(
            f"no study named {name!r} in storage {safe_url(url)!r}; "
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
    # the folders go to the log, not the message: a page shows it to any visitor
    logger.warning(
        "model file of trial %s of study %r missing; looked in %s",
        trial.number,
        study.study_name,
        ", ".join(str(Path(r) / relative) for r in roots if r),
    )
    raise ArtifactMissing(
        f"the model file of trial {trial.number} of study {study.study_name!r} is missing "
        "from the runs folder's artifacts"
    )


def study_artifact_folder(study: optuna.Study) -> str:
    """The folder name of a study's artifacts under the artifact root.

    Unique per study and storage: the study's name plus a random key recorded on the study
    when it was created, so two storages sharing one runs folder never write (or delete)
    each other's models. Studies made before the key existed use their bare name.
    """
    key = study.user_attrs.get(ARTIFACT_KEY_ATTR)
    name = validate_study_name(study.study_name)
    return f"{name}-{key}" if key else name


def save_trial_artifacts(
    root: Path,
    folder: str,
    number: int,
    model,
    history: dict,
    metrics: dict,
    config: dict,
    preview: np.ndarray | None = None,
) -> str:
    """Writes a trial's model, history, metrics and configuration, all or nothing.

    Files go to a temporary folder first and are moved into place in one rename, so a crash
    never leaves half a trial; a failed write removes the temporary folder. An existing
    trial folder is never replaced.

    Args:
        root: The artifact root.
        folder: The study's artifact folder name (:func:`study_artifact_folder`).
        number: The trial number.
        model: The trained ``keras.Model`` (the autoencoder).
        history: Per-epoch losses.
        metrics: The trial's metrics.
        config: The trial's configuration.
        preview: The model's reconstructions of the first test images, floats in [0, 1]
            (saved as 8-bit ``preview.npy``; see :func:`load_trial_preview`). Optional.

    Returns:
        The trial folder relative to ``root``, as stored in the trial row.

    Raises:
        StorageError: The files cannot be written (a full or read-only disk) or the trial
            folder already exists; nothing is left behind.
    """
    relative = f"{validate_study_name(folder)}/trial_{number:05d}"
    target = root / relative
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".trial_{number:05d}_", dir=target.parent))
        model.save(staging / "model.keras")
        for filename, payload in (
            ("history.json", history),
            ("metrics.json", metrics),
            ("config.json", config),
        ):
            (staging / filename).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        if preview is not None:
            pixels = np.clip(np.asarray(preview, dtype=np.float32)[:PREVIEW_IMAGES], 0.0, 1.0)
            np.save(staging / "preview.npy", np.round(pixels * 255).astype(np.uint8))
        if target.exists():
            raise StorageError(f"the artifact folder {target} already exists; it is left as is")
        staging.rename(target)
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"the model of trial {number} could not be saved to {root} ({exc})"
        ) from exc
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return relative


def load_trial_model(study: optuna.Study, number: int):
    """Loads a trial's trained autoencoder with Keras' ``safe_mode``.

    Args:
        study: The study.
        number: The trial number.

    Returns:
        The ``keras.Model`` named ``autoencoder`` (see ``automl_core.model.models``).

    Raises:
        ArtifactMissing: The trial has no model, or its file is gone or unreadable.
    """
    import keras

    from automl_core.model import recipes  # noqa: F401 - registers the custom layers safe_mode loads

    trial = get_trial(study, number)
    folder = trial_artifact_dir(study, trial)
    try:
        return keras.models.load_model(folder / "model.keras", safe_mode=True, compile=False)
    except Exception as exc:
        raise ArtifactMissing(
            f"the model file of trial {number} of study {study.study_name!r} cannot be read ({exc})"
        ) from exc


def load_trial_preview(study: optuna.Study, number: int) -> np.ndarray | None:
    """A trial's saved reconstructions of the first test images, without loading its model.

    Args:
        study: The study.
        number: The trial number.

    Returns:
        (N, H, W, C) float32 images in [0, 1], or None when the trial has no readable preview
        (trained before previews were saved, or the file is damaged): load the model instead.
    """
    try:
        folder = trial_artifact_dir(study, get_trial(study, number))
        pixels = np.load(folder / "preview.npy", allow_pickle=False)
    except (AutoMLError, OSError, ValueError):
        return None
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        return None
    return pixels.astype(np.float32) / 255.0


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
        storage_url: The target storage. Defaults to :func:`default_storage_url`. The
            artifacts are copied to a folder of this storage's copy alone,
            ``<artifact root>/<study>-<key>``, with the key recorded on the study: two
            storages sharing one runs folder never share (or delete) each other's models.

    Returns:
        True if the study was copied, False if the target already had it.

    Raises:
        StorageError: The source has no such study, a storage cannot be read or written, or
            the artifacts cannot be copied (a read-only runs folder).
    """
    try:
        with storage_errors(storage_url):
            return _install_study(
                source_storage_url, source_artifact_root, study_name, storage_url
            )
    except OSError as exc:
        raise StorageError(
            f"study {study_name!r} cannot be copied into {artifact_root()} ({exc.strerror or exc})"
        ) from exc


def _install_study(
    source_storage_url: str, source_artifact_root: Path, study_name: str, storage_url: str | None
) -> bool:
    """:func:`install_study` without its error translation."""
    if study_name in study_names(storage_url, create=False):  # a missing file is not made yet
        return False
    with tempfile.TemporaryDirectory() as scratch:
        source = _read_only_source(source_storage_url, Path(scratch))
        source_names = optuna.get_all_study_names(source)
        if study_name not in source_names:
            raise StorageError(
                f"no study named {study_name!r} in {safe_url(source_storage_url)!r}"
            )
        source_study = optuna.load_study(study_name=study_name, storage=source)
        # the trial rows name their folders relative to the source's root
        source_folder = Path(source_artifact_root) / study_artifact_folder(source_study)
        key = uuid.uuid4().hex[:8]
        # this storage's own copy, <root>/<name>-<key>/<source folder>/trial_*: deleting the
        # study here removes <name>-<key>, never another storage's copy of the same study
        own_root = artifact_root() / f"{study_name}-{key}"
        try:
            if source_folder.is_dir():
                shutil.copytree(source_folder, own_root / source_folder.name)
            if not (source_names == [study_name] and _copy_whole_file(source, storage_url)):
                optuna.copy_study(
                    from_study_name=study_name,
                    from_storage=source,
                    to_storage=open_storage(storage_url),
                )
        except BaseException:
            shutil.rmtree(own_root, ignore_errors=True)
            raise
        finally:
            source.engine.dispose()
    copied = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    copied.set_user_attr(ARTIFACT_ROOT_ATTR, str(own_root))
    copied.set_user_attr(ARTIFACT_KEY_ATTR, key)
    return True


def _copy_whole_file(source: optuna.storages.RDBStorage, storage_url: str | None) -> bool:
    """Copies a SQLite source (holding just the study to install) as the whole target file,
    when the target is a SQLite file that does not exist yet; False when that does not apply.

    A fresh install's first page copies the demo study this way: a file copy takes
    milliseconds where creating the tables and copying trial by trial took seconds. A copy
    the installed Optuna cannot open (an older schema) is removed and False returned.
    """
    target = sqlite_path(storage_url or default_storage_url())
    source_file = sqlite_path(str(source.engine.url))
    if target is None or source_file is None or target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".copying")
    shutil.copyfile(source_file, partial)
    partial.replace(target)  # never a half-written database under the real name
    try:
        open_storage(storage_url)
    except StorageError:
        target.unlink(missing_ok=True)
        return False
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
        reason = _hide_secrets(_failure_reason(exc), url)
        raise StorageError(f"storage {safe_url(url)!r} cannot be read ({reason})") from exc


def delete_study(name: str, storage_url: str | None = None) -> None:
    """Deletes a study's storage rows and its trials' artifacts (no role or running-search
    check: :func:`automl_core.hosting.processes.delete_study` is the user's action).

    Args:
        name: The study.
        storage_url: Its storage. Defaults to :func:`default_storage_url`.

    Raises:
        ConfigError: The name is invalid.
        StorageError: No such study.
    """
    validate_study_name(name)
    url = storage_url or default_storage_url()
    study = load_study(name, url, create=False)
    folder = study_artifact_folder(study)
    roots = {Path(r) for r in (study.user_attrs.get(ARTIFACT_ROOT_ATTR), artifact_root()) if r}
    with storage_errors(url):
        optuna.delete_study(study_name=name, storage=open_storage(url))
    for root in roots:
        target = (root / folder).resolve()
        if target.parent == root.resolve() and target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
