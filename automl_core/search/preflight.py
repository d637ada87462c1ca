"""Before a search starts: its settings resolved from what a caller named, and checked.

The CLI's ``search``, the Python API and the dashboard's launch build a search's settings
with :func:`resolve_settings` and check them with :func:`check_search`, so the three agree
on defaults, on resuming a stored study and on every refusal, and bad input fails in
milliseconds, before any worker starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from automl_core.errors import ConfigError, StorageError
from automl_core.model.datasets import DATASETS, load_arrays
from automl_core.model.precision import check_precision_available
from automl_core.model.shapes import check_space_fits
from automl_core.model.space import SearchSpace
from automl_core.search.strategies import Strategy, StrategyContext, default_space, get_strategy
from automl_core.storage import store
from automl_core.storage.settings import (
    DEFAULT_STRATEGY,
    SearchSettings,
    settings_conflict,
    stored_settings,
    study_settings,
)

# the dataset of a search that names none
DEFAULT_DATASET = "mnist-5k"

# ``space(base)``: the space a caller asked for, over ``base`` (the stored, given or default
# space), as :meth:`SearchSpace.to_dict` gives it
SpaceOver = Callable[[dict[str, Any]], dict[str, Any]]


def resolve_settings(
    given: dict[str, Any], storage_url: str | None = None, space: SpaceOver | None = None
) -> SearchSettings:
    """The settings of a search from the values a caller named (the CLI's flags, the API's
    keywords, a settings file's values).

    A new study takes the defaults for what was not named (dataset ``mnist-5k``, the
    default strategy, its default space, the name ``<dataset>-<strategy>``). A study that
    exists resumes: its stored settings are the defaults, and a named value that
    contradicts one of them (outside :data:`~automl_core.storage.settings.RESUMABLE_SETTINGS`)
    is refused, naming both.

    Args:
        given: Setting names to values; None means not named. ``space`` may be among them.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.
        space: Builds the space the caller asked for over a base space; None keeps the base.

    Returns:
        The settings (not yet checked against the data: see :func:`check_search`).

    Raises:
        ConfigError: An invalid value, or a resume that contradicts the stored settings.
        StorageError: The storage cannot be read.
    """
    values = {key: value for key, value in given.items() if value is not None}
    stored = stored_settings(values["study"], storage_url) if values.get("study") else None
    if stored is not None:
        values = {**stored.to_dict(), **values}
    else:
        dataset = values.setdefault("dataset", DEFAULT_DATASET)
        strategy = values.setdefault("strategy", DEFAULT_STRATEGY)
        values.setdefault("study", f"{os.path.basename(str(dataset)).split('.')[0]}-{strategy}")
        values.setdefault("space", default_space(strategy))
    if space is not None:
        values["space"] = space(dict(values["space"]))
    values["space"] = SearchSpace.from_dict(values["space"]).to_dict()  # checked, complete
    settings = SearchSettings.from_dict(values)
    if stored is not None:
        conflict = settings_conflict(settings, stored.to_dict())
        if conflict:
            raise ConfigError(conflict)
    return settings


def dataset_input_shape(source: str) -> tuple[int, int, int]:
    """The (H, W, C) of one image of a registry dataset or a dataset path.

    Raises:
        DatasetError: The dataset cannot be loaded.
    """
    x, _, _ = load_arrays(source)
    return tuple(int(d) for d in x.shape[1:])  # type: ignore[return-value]


def check_search(
    settings: SearchSettings,
    storage_url: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> Strategy:
    """Checks a search before anything starts, so the caller can say what is wrong at once.

    The one pre-flight check of the CLI's ``search`` and the dashboard's launch.

    Args:
        settings: The search.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.
        input_shape: One image's (H, W, C) when the caller has loaded the data already;
            otherwise offline datasets and paths are read to learn it (downloadable ones
            are checked by the worker that downloads them).

    Returns:
        The search's strategy.

    Raises:
        ConfigError: Unknown strategy, impossible space for the images, a precision
            this machine cannot train in, or the study exists with other settings.
        DatasetError: The dataset cannot be loaded.
    """
    strategy = get_strategy(settings.strategy)
    check_precision_available(settings.precision)
    space = settings.search_space()
    if strategy.needs_grid:
        space.grid()
    if input_shape is None and (
        settings.dataset not in DATASETS or DATASETS[settings.dataset].offline
    ):
        input_shape = dataset_input_shape(settings.dataset)
    if input_shape is not None:
        space.validate_for(input_shape)
        check_space_fits(space, input_shape)  # nothing buildable: refuse before training
        # a strategy may refuse a space (reinforce's ranges, darts' operations): say so now
        sampler = strategy.make_sampler(
            StrategyContext(space, settings.seed, input_shape, settings.max_epochs)
        )
        if hasattr(sampler, "preflight"):
            sampler.preflight()
    if settings.study not in store.study_names(storage_url):
        return strategy
    try:
        stored = study_settings(store.load_study(settings.study, storage_url)).to_dict()
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    conflict = settings_conflict(settings, stored)
    if conflict:
        raise ConfigError(conflict)
    return strategy
