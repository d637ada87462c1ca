"""The package's Python API: run a search, read its leaderboard, load and export its models.

These four functions are what ``import automl_core`` offers (``automl_core.search(...)``);
each is one call into the same code as a command of ``python -m automl_core`` (the
``automl`` console script), with the same checks and the same error messages, raised as
:mod:`automl_core.errors` exceptions instead of printed.

Example:
    >>> import automl_core
    >>> study = automl_core.search(dataset="digits", trials=2, max_epochs=1)
    >>> automl_core.results(study)[["trial", "state", "val_mse"]]
    >>> model = automl_core.load_model(study)  # the best trial's keras.Model
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from automl_core import cli
from automl_core.analysis.export import export_study
from automl_core.analysis.leaderboard import display_columns
from automl_core.errors import ConfigError
from automl_core.model.space import SearchSpace, load_space
from automl_core.search.preflight import check_search, resolve_settings
from automl_core.search.runner import TrialCallback, run_search
from automl_core.search.workers import check_workers
from automl_core.storage import store
from automl_core.storage.results import best_trial, trials_frame

__all__ = ["search", "results", "load_model", "export"]

# a space: parameter names to choices or ranges (as a --space file holds), a SearchSpace,
# or the path of a JSON / YAML file
SpaceLike = Mapping[str, Any] | SearchSpace | str | os.PathLike


def search(
    dataset: str | os.PathLike | None = None,
    space: SpaceLike | None = None,
    strategy: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    max_epochs: int | None = None,
    study: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    precision: str | None = None,
    seed: int | None = None,
    max_images: int | None = None,
    second_objective: str | None = None,
    on_trial: TrialCallback | None = None,
) -> optuna.Study:
    """Runs (or resumes) a search, as ``python -m automl_core search`` does, and returns its study.

    The keywords are the command's flags. Trials train in ``workers`` child processes; this
    call returns when the budget is spent. Calling it again with the same ``study`` resumes
    it: finished trials are never retrained, and the stored dataset, space, strategy and
    seed are the defaults (``trials``, ``timeout``, ``max_epochs`` and ``precision`` may
    change; any other value that contradicts the stored settings is refused).

    Args:
        dataset: A registry name (``mnist-5k``, ``digits``, ``patches``, ``mnist``, ...) or
            the path of an ``.npz``, ``.zip`` or folder of images. Defaults to ``mnist-5k``
            (a resumed study: its own).
        space: The search space: a mapping of parameter names to a list of choices, one
            value, or a range ``{"low": ..., "high": ..., "log": bool}`` (what a ``--space``
            file holds; parameters left out keep their default), a
            :class:`~automl_core.space.SearchSpace`, or the path of a JSON / YAML file.
            Defaults to the strategy's default space (a resumed study: its own).
        strategy: A strategy name (``grid``, ``random``, ``tpe``, ``hyperband``, ``nsga2``,
            ...). Defaults to ``tpe-cost-asha`` (a resumed study: its own).
        trials: Trials to finish in the study. Defaults to the grid's size for grid search,
            else 20 (10,000 when only ``timeout`` bounds the search).
        timeout: Wall-clock seconds for the search. Defaults to None (no limit).
        max_epochs: Most epochs per trial. Defaults to 20 (a resumed study: its own).
        study: The study's name. Defaults to ``<dataset>-<strategy>``.
        storage: A SQLAlchemy URL of the study storage. Defaults to ``AUTOML_STORAGE``, else
            ``sqlite:///<AUTOML_HOME>/studies.db`` (``AUTOML_HOME`` defaults to ``./runs``).
        workers: Worker processes on this machine. Defaults to 1.
        precision: ``auto``, ``float32``, ``bfloat16`` or ``float16`` (GPUs only). Defaults
            to ``AUTOML_PRECISION``, else ``auto`` (measured once per machine).
        seed: Seed of the data split, the sampler and the weights, 0 to 2147483647.
            Defaults to 0 (a resumed study: its own).
        max_images: Use only this many images (quick trials). Defaults to all of them.
        second_objective: The second objective of ``nsga2``: ``compression_ratio`` or
            ``param_count``. Defaults to ``compression_ratio``.
        on_trial: Called with ``(study, trial)`` as each trial finishes. Defaults to None.

    Returns:
        The study (``optuna.Study``); :func:`results` turns it into the leaderboard.

    Raises:
        ConfigError: An invalid value (unknown strategy, empty or impossible space,
            ``trials=0``, ...) or a resume that contradicts the stored settings.
        DatasetError: The dataset cannot be loaded.
        StorageError: The storage cannot be reached or read.
        KeyboardInterrupt: Interrupted: the workers were stopped and their running trials
            queued again for the next call.

    Example:
        >>> import automl_core
        >>> study = automl_core.search(
        ...     dataset="digits", space={"filters": [8, 16], "latent_dim": [8]},
        ...     strategy="grid", max_epochs=2, study="digits-grid", workers=1,
        ... )
        >>> len(study.trials)
        2
    """
    cli._check_count("seed", _integer("seed", seed), low=0, high=cli.MAX_SEED)
    with store.storage_errors(storage):
        settings = resolve_settings(
            {
                "study": study,
                "dataset": None if dataset is None else os.fspath(dataset),
                "strategy": strategy,
                "trials": _integer("trials", trials),
                "timeout": _number("timeout", timeout),
                "max_epochs": _integer("max_epochs", max_epochs),
                "seed": seed,
                "max_images": _integer("max_images", max_images),
                "second_objective": second_objective,
                "precision": precision,
            },
            storage,
            None if space is None else (lambda base: _space_dict(space)),
        )
        check_workers(workers)
        check_search(settings, storage)  # bad input fails here, before any process starts
        return run_search(settings, storage, on_trial=on_trial, workers=workers)


def results(study: str | optuna.Study, storage: str | None = None) -> pd.DataFrame:
    """A study's leaderboard: every trial, best validation MSE first, every column.

    The table ``python -m automl_core leaderboard --format csv`` prints: ``study``,
    ``trial``, ``state``, the metrics (``val_mse``, ``test_psnr``, ``vs_pca_db``,
    ``test_ssim``, ``param_count``, ``compression_ratio``, ``train_seconds``, ``epochs``,
    ``pca_psnr``; NaN where a trial has none), users' notes when any, the parameters that
    vary between trials, then those all share, ``precision``, ``has_model`` and ``note``
    (why a trial failed or was pruned).

    Args:
        study: The study's name, or the study :func:`search` returned.
        storage: The storage of a study given by name. Defaults to ``AUTOML_STORAGE``,
            else the runs folder's ``studies.db``.

    Returns:
        The table (a ``pandas.DataFrame``, one row per trial).

    Raises:
        StorageError: The storage cannot be read, or holds no study of that name.

    Example:
        >>> import automl_core
        >>> table = automl_core.results("digits-grid")
        >>> table[["trial", "state", "val_mse", "test_psnr"]].head(3)
    """
    with store.storage_errors(storage):
        frame = trials_frame(_load_study(study, storage))
        return frame[display_columns(frame, with_study=True)]


def load_model(study: str | optuna.Study, trial: int | None = None, storage: str | None = None):
    """A trial's trained autoencoder, loaded with Keras' ``safe_mode``.

    Args:
        study: The study's name, or the study :func:`search` returned.
        trial: The trial number. Defaults to the best trial (the lowest validation MSE
            among the finished trials with a model).
        storage: The storage of a study given by name. Defaults to ``AUTOML_STORAGE``,
            else the runs folder's ``studies.db``.

    Returns:
        The ``keras.Model`` named ``autoencoder``, whose ``encoder`` and ``decoder``
        layers are models of their own; not compiled.

    Raises:
        ConfigError: The study has no trial of that number.
        ArtifactMissing: The trial (or, by default, every trial) has no readable model.
        StorageError: The storage cannot be read, or holds no study of that name.

    Example:
        >>> import automl_core
        >>> model = automl_core.load_model("digits-grid")
        >>> codes = model.get_layer("encoder").predict(images)
    """
    cli._check_count("trial", _integer("trial", trial), low=0)
    with store.storage_errors(storage):
        loaded = _load_study(study, storage)
        number = best_trial(loaded).number if trial is None else trial
        return store.load_trial_model(loaded, number)


def export(
    study: str | optuna.Study,
    out: str | os.PathLike,
    trial: int | None = None,
    storage: str | None = None,
) -> tuple[Path, Path]:
    """Writes a trial's bundle and the study's HTML report into a folder, as
    ``python -m automl_core export`` does.

    The bundle (``<study>-trial-<n>.zip``) holds the model, its encoder and decoder as
    ``.keras`` and TFLite files (each checked against Keras), the trial's configuration,
    metrics, history and filters; the report (``<study>-report.html``) is self-contained.

    Args:
        study: The study's name, or the study :func:`search` returned.
        out: The folder to write into (created if missing).
        trial: The trial number. Defaults to the best trial.
        storage: The storage of a study given by name. Defaults to ``AUTOML_STORAGE``,
            else the runs folder's ``studies.db``.

    Returns:
        The paths written: (the ``.zip`` bundle, the ``.html`` report).

    Raises:
        ConfigError: The study has no trial of that number.
        ArtifactMissing: The trial has no readable model.
        ExportError: The folder cannot be made or written; nothing partial is left in it.
        StorageError: The storage cannot be read, or holds no study of that name.

    Example:
        >>> import automl_core
        >>> bundle, report = automl_core.export("digits-grid", "exports")
        >>> bundle.name
        'digits-grid-trial-1.zip'
    """
    cli._check_count("trial", _integer("trial", trial), low=0)
    if isinstance(study, optuna.Study):
        storage = storage or _storage_url(study)
        study = study.study_name
    with store.storage_errors(storage):
        return export_study(study, out, trial, storage)


def _space_dict(space: SpaceLike) -> dict[str, Any]:
    """A checked space as plain values, from a mapping, a space or a file."""
    if isinstance(space, str | os.PathLike):
        return load_space(space).to_dict()
    if isinstance(space, SearchSpace):
        return space.to_dict()
    return SearchSpace.from_dict(dict(space) if isinstance(space, Mapping) else space).to_dict()


def _integer(name: str, value: Any) -> int | None:
    """Refuses a value that is not a whole number (None passes), naming it."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ConfigError(f"{name} must be an integer, got {name}={value!r}")


def _number(name: str, value: Any) -> float | int | None:
    """Refuses a value that is not a number (None passes), naming it."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise ConfigError(f"{name} must be a number, got {name}={value!r}")


def _load_study(study: str | optuna.Study, storage: str | None) -> optuna.Study:
    """The study itself, or the stored study of that name (read only: nothing is created)."""
    if isinstance(study, optuna.Study):
        return study
    return store.load_study(study, storage, create=False)


def _storage_url(study: optuna.Study) -> str | None:
    """The URL of the storage a study was opened from, or None where it has none."""
    # Optuna wraps an RDBStorage in a cache whose backend holds the URL; bulk_read.py reads
    # the backend the same way
    backend = getattr(study._storage, "_backend", study._storage)
    return getattr(backend, "url", None)
