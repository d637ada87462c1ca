"""A study's trials read in bulk from a relational storage's tables, for large studies.

Optuna's ``study.get_trials()`` builds every trial through its ORM, with every parameter's
distribution parsed twice and every intermediate value and system attribute loaded: about
40 s for 10,000 trials on a slow core, paid by the first page that opens a large study in a
new server process. The pages need less: a trial's number, state, times, values, parameters,
user attributes and how many epochs it reported. This module reads just those with five
plain SQL selects over Optuna's own tables (read only, never written) and hands
:meth:`~automl_core.storage.trials.TrialRecord.from_frozen` light stand-ins for the trials, so a
record means the same whichever way it was read.

Anything unexpected (another storage, a schema this code does not know) returns None, and
the caller reads through Optuna as before.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import optuna

__all__ = ["BulkTrial", "frozen_trials", "read_bulk"]

logger = logging.getLogger(__name__)


@dataclass
class BulkTrial:
    """The fields of an Optuna ``FrozenTrial`` that the trial records read.

    Attributes:
        number: The trial's number in its study.
        state: Its state.
        values: Its objective values, or None.
        params: Parameter values in their external form (as ``trial.params``).
        user_attrs: Its user attributes, decoded.
        datetime_start: When it started, or None.
        datetime_complete: When it ended, or None.
        intermediate_count: How many intermediate values it reported.
        trial_id: Its id in the storage.
        distributions: Each parameter's distribution.
    """

    number: int
    state: optuna.trial.TrialState
    values: list[float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    datetime_start: datetime.datetime | None = None
    datetime_complete: datetime.datetime | None = None
    intermediate_count: int = 0
    trial_id: int = -1
    distributions: dict[str, Any] = field(default_factory=dict)

    def frozen(self) -> optuna.trial.FrozenTrial:
        """An Optuna trial for Optuna's plots: every field but the intermediate values and
        system attributes, which are not read."""
        return optuna.trial.FrozenTrial(
            number=self.number,
            state=self.state,
            value=None,
            values=self.values,
            datetime_start=self.datetime_start,
            datetime_complete=self.datetime_complete,
            params=self.params,
            distributions=self.distributions,
            user_attrs=self.user_attrs,
            system_attrs={},
            intermediate_values={},
            trial_id=self.trial_id,
        )

    @property
    def duration(self) -> datetime.timedelta | None:
        """Time from start to end, as ``FrozenTrial.duration``."""
        if self.datetime_start and self.datetime_complete:
            return self.datetime_complete - self.datetime_start
        return None

    @property
    def intermediate_values(self) -> range:
        """Stands in for the reported values where only their count is read."""
        return range(self.intermediate_count)


def _rdb_storage(study: optuna.Study):
    """The study's ``RDBStorage``, unwrapped from Optuna's cache, or None."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)
    if isinstance(storage, optuna.storages.RDBStorage):
        return storage
    return None


@functools.lru_cache(maxsize=1024)
def _distribution(distribution_json: str):
    return optuna.distributions.json_to_distribution(distribution_json)


def read_bulk(study: optuna.Study) -> list[BulkTrial] | None:
    """Every trial of a study from its relational storage, in trial-number order.

    Args:
        study: A study on an ``RDBStorage`` (SQLite, PostgreSQL, MySQL).

    Returns:
        The trials, or None where the storage is not relational or its tables are not
        the ones this code knows (the caller then reads through Optuna).
    """
    storage = _rdb_storage(study)
    if storage is None:
        return None
    try:
        return _read(storage, study._study_id)
    except Exception as exc:  # any surprise means: read the slow, supported way
        logger.debug("bulk read of study %s fell back to Optuna: %s", study.study_name, exc)
        return None


def _read(storage, study_id: int) -> list[BulkTrial]:
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials_t = models.TrialModel.__table__
    params_t = models.TrialParamModel.__table__
    values_t = models.TrialValueModel.__table__
    attrs_t = models.TrialUserAttributeModel.__table__
    steps_t = models.TrialIntermediateValueModel.__table__
    in_study = sa.select(trials_t.c.trial_id).where(trials_t.c.study_id == study_id)
    by_id: dict[int, BulkTrial] = {}
    with storage.engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                trials_t.c.trial_id,
                trials_t.c.number,
                trials_t.c.state,
                trials_t.c.datetime_start,
                trials_t.c.datetime_complete,
            ).where(trials_t.c.study_id == study_id)
        )
        for trial_id, number, state, started, completed in rows:
            by_id[trial_id] = BulkTrial(
                trial_id=trial_id,
                number=number,
                state=state,
                datetime_start=started,
                datetime_complete=completed,
            )
        values: dict[int, dict[int, float]] = defaultdict(dict)
        for trial_id, objective, value, kind in connection.execute(
            sa.select(
                values_t.c.trial_id, values_t.c.objective, values_t.c.value, values_t.c.value_type
            ).where(values_t.c.trial_id.in_(in_study))
        ):
            values[trial_id][objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
        for trial_id, by_objective in values.items():
            by_id[trial_id].values = [by_objective[i] for i in sorted(by_objective)]
        for trial_id, name, value, distribution in connection.execute(
            sa.select(
                params_t.c.trial_id,
                params_t.c.param_name,
                params_t.c.param_value,
                params_t.c.distribution_json,
            )
            .where(params_t.c.trial_id.in_(in_study))
            .order_by(params_t.c.param_id)
        ):
            parsed = _distribution(distribution)
            by_id[trial_id].params[name] = parsed.to_external_repr(value)
            by_id[trial_id].distributions[name] = parsed
        for trial_id, key, value_json in connection.execute(
            sa.select(attrs_t.c.trial_id, attrs_t.c.key, attrs_t.c.value_json).where(
                attrs_t.c.trial_id.in_(in_study)
            )
        ):
            by_id[trial_id].user_attrs[key] = json.loads(value_json)
        for trial_id, count in connection.execute(
            sa.select(steps_t.c.trial_id, sa.func.count())
            .where(steps_t.c.trial_id.in_(in_study))
            .group_by(steps_t.c.trial_id)
        ):
            by_id[trial_id].intermediate_count = int(count)
    return sorted(by_id.values(), key=lambda t: t.number)


def frozen_trials(
    study: optuna.Study, states=None, bulk: list[BulkTrial] | None = None
) -> list[optuna.trial.FrozenTrial] | None:
    """A study's trials as Optuna trials for its plots, read in bulk (see :func:`read_bulk`).

    Args:
        study: The study.
        states: Only trials in these states. Defaults to every state.
        bulk: The study's trials already read by :func:`read_bulk`. Defaults to None: read here.

    Returns:
        The trials in number order (without intermediate values or system attributes), or
        None where the bulk read cannot be made.
    """
    bulk = read_bulk(study) if bulk is None else bulk
    if bulk is None:
        return None
    return [t.frozen() for t in bulk if states is None or t.state in states]
