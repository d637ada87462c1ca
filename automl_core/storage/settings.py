"""The settings of a search: one frozen record, stored on its study so any worker can join.

A re-run of the same study may change only the budget (:data:`RESUMABLE_SETTINGS`);
anything else makes it another search, and :func:`settings_conflict` says which setting.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna

from automl_core.errors import ConfigError, StorageError
from automl_core.model.datasets import load_dataset
from automl_core.model.precision import PrecisionChoice, check_precision, default_precision
from automl_core.model.space import SearchSpace
from automl_core.storage import store
from automl_core.storage.trials import RUN_ATTR, RUN_HEARTBEAT_ATTR

# study attribute: Unix time at which the search's workers stop training, or None
DEADLINE_ATTR = "deadline"
# study attribute: the precision the search's workers train with (PrecisionChoice.to_dict)
STUDY_PRECISION_ATTR = "precision"
SECOND_OBJECTIVES = {"compression_ratio": "maximize", "param_count": "minimize"}


# multi-fidelity by default: on a slow machine a full trial can take a minute, and a search
# must compare many configurations in its first minutes (bench/RESULTS.md, issue 12)
DEFAULT_STRATEGY = "tpe-cost-asha"


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; stored on the study so any worker can join it.

    Attributes:
        study: The study's name.
        dataset: A registry name or a path every worker can read.
        space: The search space, as :meth:`SearchSpace.to_dict` gives it.
        strategy: A :data:`STRATEGIES` name.
        trials: Trials to finish in the whole study (None: the grid's size, or 20).
        timeout: Seconds of wall clock for the search from its (re)start, or None.
        max_epochs: Most epochs per trial.
        seed: Seed of the data split, the sampler and weight initialisation.
        max_images: Use only this many images (tiny runs), or None for all.
        val_fraction: Share of images for validation.
        test_fraction: Share of images for the test split.
        second_objective: For multi-objective strategies: ``compression_ratio`` or
            ``param_count``.
        precision: The number format of training: ``auto`` (measured once per machine),
            ``float32``, ``bfloat16`` or ``float16`` (GPUs only). Defaults to
            ``AUTOML_PRECISION``, else ``auto``. A setting of the run, not a searched
            parameter: every worker trains with the policy the search resolved.
    """

    study: str
    dataset: str = "mnist-5k"
    space: dict[str, Any] = field(default_factory=dict)
    strategy: str = DEFAULT_STRATEGY
    trials: int | None = None
    timeout: float | None = None
    max_epochs: int = 20
    seed: int = 0
    max_images: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    second_objective: str = "compression_ratio"
    precision: str = field(default_factory=default_precision)

    def __post_init__(self) -> None:
        store.validate_study_name(self.study)
        check_precision(self.precision)
        if self.trials is not None and (isinstance(self.trials, bool) or self.trials < 1):
            raise ConfigError(f"trials must be a positive integer, got trials={self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(
                f"timeout must be a positive number of seconds, got timeout={self.timeout}"
            )
        if isinstance(self.max_epochs, bool) or self.max_epochs < 1:
            raise ConfigError(
                f"max_epochs must be a positive integer, got max_epochs={self.max_epochs}"
            )
        if self.second_objective not in SECOND_OBJECTIVES:
            raise ConfigError(
                f"unknown second objective {self.second_objective!r}; expected one of "
                f"{', '.join(SECOND_OBJECTIVES)}"
            )

    def search_space(self) -> SearchSpace:
        """The space as an object."""
        return SearchSpace.from_dict(self.space)

    def trial_budget(self) -> int:
        """Trials to finish: ``trials``, capped by the grid size for grid search."""
        size = self.search_space().grid_size()
        if self.strategy == "grid" and size is not None:
            return min(self.trials, size) if self.trials else size
        if self.trials:
            return self.trials
        return 10_000 if self.timeout else 20

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the study stores)."""
        return asdict(self)

    def to_json(self) -> str:
        """The settings as one JSON document: what a launch hands its search process
        (``search --settings FILE``); the study stores the same values (:meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchSettings:
        """Reads :meth:`to_dict` output back.

        Raises:
            ConfigError: A name that is no setting, no study name, or a value of the wrong
                kind, each named.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown search setting(s) {', '.join(unknown)}; expected some of "
                + ", ".join(known)
            )
        if "study" not in values:
            raise ConfigError("the search settings name no study; expected a 'study' value")
        try:
            return cls(**values)
        except TypeError as exc:  # a string where a number belongs, met by a comparison
            raise ConfigError(f"invalid search settings {values!r}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "the search settings") -> SearchSettings:
        """Reads :meth:`to_json` output back.

        Raises:
            ConfigError: ``source`` is not a JSON object of settings (see :meth:`from_dict`).
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source} is not JSON ({exc.msg}, line {exc.lineno}); expected the object "
                "SearchSettings.to_json writes"
            ) from None
        if not isinstance(values, dict):
            raise ConfigError(
                f"{source} holds a JSON {type(values).__name__}; expected an object of settings"
            )
        return cls.from_dict(values)


# settings a re-run may change without making it another search
RESUMABLE_SETTINGS = ("trials", "timeout", "max_epochs", "precision")


def settings_conflict(settings: SearchSettings, stored: dict[str, Any]) -> str | None:
    """Why a re-run with ``settings`` cannot resume a study stored with ``stored``, or None.

    Args:
        settings: The new run's settings.
        stored: The study's stored settings (:meth:`SearchSettings.to_dict`).

    Returns:
        A message naming the first differing setting, or None when they match.
    """
    wanted = {**settings.to_dict(), "space": settings.search_space().to_dict()}
    # a space stored before a parameter existed means that parameter's default
    stored = {**stored, "space": SearchSpace.from_dict(stored.get("space") or {}).to_dict()}
    for key, value in wanted.items():
        if key not in RESUMABLE_SETTINGS and stored.get(key) != value:
            return (
                f"study {settings.study!r} already exists with {key}={stored.get(key)!r}, not "
                f"{value!r}; resume it with the same settings or pick a new study name"
            )
    return None


@dataclass(frozen=True)
class StudyRecord:
    """A study's own record, read from its attributes at once (beside
    :class:`~automl_core.storage.trials.TrialRecord`, one per trial).

    What the search and its workers keep on a study; the strategies' private state (DARTS'
    result, the promotions of the halving pruner) and the trial notes stay with the modules
    that own them.

    Attributes:
        name: The study's name.
        settings: Its search settings (:class:`SearchSettings`), None for a study this tool
            did not create.
        precision: The number format its workers train with (float32 for studies stored
            before it was a setting).
        deadline: Unix time at which its workers stop training, or None.
        run: The token of the search run that last prepared it, or None.
        heartbeat: Unix time at which that run last said it is alive (None once it ended).
        artifact_root: The folder its artifacts were written under, or None.
        artifact_key: The short key of its artifact folder, or None.
    """

    name: str
    settings: SearchSettings | None
    precision: PrecisionChoice
    deadline: float | None = None
    run: str | None = None
    heartbeat: float | None = None
    artifact_root: str | None = None
    artifact_key: str | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        """The record of a study (one read of its attributes).

        Raises:
            ConfigError: It holds settings that are not this tool's (the message names them).
        """
        attrs = study.user_attrs
        stored = attrs.get(store.SETTINGS_ATTR)
        precision = attrs.get(STUDY_PRECISION_ATTR)
        deadline, beat = attrs.get(DEADLINE_ATTR), attrs.get(RUN_HEARTBEAT_ATTR)
        return cls(
            study.study_name,
            SearchSettings.from_dict(stored) if isinstance(stored, dict) else None,
            PrecisionChoice.from_dict(precision)
            if isinstance(precision, dict)
            else PrecisionChoice("float32", "float32", "stored before precision was a setting"),
            float(deadline) if isinstance(deadline, int | float) else None,
            str(attrs[RUN_ATTR]) if attrs.get(RUN_ATTR) else None,
            float(beat) if isinstance(beat, int | float) else None,
            attrs.get(store.ARTIFACT_ROOT_ATTR),
            attrs.get(store.ARTIFACT_KEY_ATTR),
        )

    def search_settings(self) -> SearchSettings:
        """Its settings.

        Raises:
            StorageError: The study was not created by this tool.
        """
        if self.settings is None:
            raise StorageError(
                f"study {self.name!r} has no search settings; it was not created by automl_core"
            )
        return self.settings


def study_deadline(study: optuna.Study) -> float | None:
    """Unix time at which the study's workers stop training, or None (read alone: the
    search loop asks it often)."""
    deadline = study.user_attrs.get(DEADLINE_ATTR)
    return float(deadline) if isinstance(deadline, int | float) else None


def study_settings(study: optuna.Study) -> SearchSettings:
    """The settings stored on a study by :func:`prepare_study`.

    Raises:
        StorageError: The study was not created by this tool.
    """
    return StudyRecord.of(study).search_settings()


def study_dataset(study: optuna.Study):
    """The dataset a study was searched on, split as its search split it.

    Raises:
        StorageError: The study holds no settings of this tool.
        DatasetError: The dataset cannot be loaded here.
    """

    settings = study_settings(study)
    return load_dataset(
        settings.dataset,
        settings.seed,
        settings.val_fraction,
        settings.test_fraction,
        settings.max_images,
    )


def stored_settings(study_name: str, storage_url: str | None = None) -> SearchSettings | None:
    """The settings of an existing study, or None when the storage has no study of that name.

    Raises:
        StorageError: The storage cannot be read, or the study was not created by this tool.
    """
    if study_name not in store.study_names(storage_url):
        return None
    return study_settings(store.load_study(study_name, storage_url, create=False))


def study_precision(study: optuna.Study) -> PrecisionChoice:
    """The precision a study's workers train with (float32 for studies stored before it)."""
    return StudyRecord.of(study).precision


def default_study_name(dataset: str, strategy: str) -> str:
    """A fresh, valid study name for a dataset and strategy (``<dataset>-<strategy>-<time>``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(dataset).stem)[:40].strip(".-") or "data"
    return f"{stem}-{strategy}-{time.strftime('%m%d-%H%M%S')}"
