"""The trial record: what a trial stores beside Optuna's own fields, read once into a type.

Workers write a handful of user attributes on each trial (its configuration, metrics, live
curves, why it failed, where its model is). Everything that reads trials (tables, the CLI,
progress, duplicate lookup, the budget) goes through :class:`TrialRecord`, so the keys and
the rules about them live here and nowhere else.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_core.storage.bulk_read import read_bulk

# user attribute keys of a trial (the storage contract between workers and readers)
CONFIG_ATTR = "config"
METRICS_ATTR = "metrics"
LIVE_ATTR = "live"
FAIL_REASON_ATTR = "fail_reason"
DUPLICATE_ATTR = "duplicate_of"
RETRY_ATTR = "retry_of"
# the epoch a retried trial continued from (its interrupted predecessor's checkpoint)
RESUMED_AT_ATTR = "resumed_at_epoch"
# a re-run of a trial stopped at the first rung of a multi-fidelity search, now promoted
PROMOTED_FROM_ATTR = "promoted_from"
WORKER_ATTR = "worker"
ARTIFACT_ATTR = "artifact_dir"
# measured timings of a trial, for cost models: ``first_report_seconds`` (trial start to its
# first report), ``first_report_epochs`` (epochs done then, 1/3 in a multi-fidelity search)
# and ``epoch_seconds`` (one epoch of training after tracing, measured between reports)
COST_ATTR = "cost"
# the Keras policy a trial trained with (float32, mixed_bfloat16, mixed_float16), and why a
# mixed-precision trial fell back to float32 (absent when it did not)
PRECISION_ATTR = "precision"
PRECISION_FALLBACK_ATTR = "precision_fallback"
# study attribute: changes whenever one of its trials starts or ends (a cheap version stamp)
CHANGED_ATTR = "changed"
# study attribute: the token of the search run that last prepared it; workers started
# before the study was ready wait for it
RUN_ATTR = "run"
# study attribute: Unix time at which the search run named by RUN_ATTR last said it is alive
# (None once it ended); a second search of the study is refused while it is recent
RUN_HEARTBEAT_ATTR = "run_heartbeat"
# study attribute: numbers of the trials whose configuration was queued again (promoted)
PROMOTED_ATTR = "promoted"
# study attribute: the DARTS search's progress and result (automl_core.search.darts.DartsResult)
DARTS_ATTR = "darts"
# study attributes "trial_note:<number>": a user's plain-text note on a trial. Kept on the
# study, not the trial: Optuna refuses to change a finished trial's user attributes
# (UpdateFinishedTrialError), and notes are written on finished trials
NOTE_ATTR_PREFIX = "trial_note:"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as this tool stored it.

    Attributes:
        number: The trial's number in its study.
        state: Optuna's state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ...).
        config: The full configuration (parameter name to value); the sampled parameters
            when the trial has not recorded one yet.
        params: The parameters the sampler chose (single-valued ones may be missing).
        metrics: The metrics of a trained model (empty before training ends).
        live: ``{"epoch", "epochs", "loss", "val_loss", "val_mse"}`` as reported at each
            report point (``epoch``: the epoch in progress, ``epochs``: epochs done, which
            is a fraction at the first rungs of a multi-fidelity search).
        values: The objective values, or None.
        fail_reason: Why the trial failed for a reason of its own ('' otherwise).
        duplicate_of: The earlier trial whose result this one reuses, or None.
        retry_of: The interrupted trial this one retries, or None.
        promoted_from: The trial stopped at the first rung that this one re-runs, or None.
        worker: ``host:pid`` of the worker that ran it ('' if unknown).
        artifact_dir: Its artifact folder relative to the artifact root ('' when none).
        seconds: Wall-clock duration, or None while it runs.
        finished_at: Unix time it finished, or None while it runs.
        epochs_reported: Reports to the pruner (intermediate values).
        cost: Measured timings (:data:`COST_ATTR`), empty before the first report.
        precision: The Keras policy it trained with ('' when not recorded: trials from
            before precision was a setting trained in float32).
        precision_fallback: Why a mixed-precision training was retried in float32 ('' if
            it was not).
    """

    number: int
    state: str
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    values: tuple[float, ...] | None = None
    fail_reason: str = ""
    duplicate_of: int | None = None
    retry_of: int | None = None
    promoted_from: int | None = None
    worker: str = ""
    artifact_dir: str = ""
    seconds: float | None = None
    finished_at: float | None = None
    epochs_reported: int = 0
    cost: dict[str, float] = field(default_factory=dict)
    precision: str = ""
    precision_fallback: str = ""

    @classmethod
    def from_frozen(cls, trial: FrozenTrial) -> TrialRecord:
        """Reads an Optuna trial's stored fields.

        Args:
            trial: A trial from ``study.get_trials()``.

        Returns:
            The record.
        """
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            state=trial.state.name,
            config=dict(attrs.get(CONFIG_ATTR) or trial.params),
            params=dict(trial.params),
            metrics=dict(attrs.get(METRICS_ATTR) or {}),
            live=dict(attrs.get(LIVE_ATTR) or {}),
            values=tuple(trial.values) if trial.values is not None else None,
            fail_reason=str(attrs.get(FAIL_REASON_ATTR, "")),
            duplicate_of=attrs.get(DUPLICATE_ATTR),
            retry_of=attrs.get(RETRY_ATTR),
            promoted_from=attrs.get(PROMOTED_FROM_ATTR),
            worker=str(attrs.get(WORKER_ATTR, "")),
            artifact_dir=str(attrs.get(ARTIFACT_ATTR, "")),
            seconds=trial.duration.total_seconds() if trial.duration is not None else None,
            finished_at=(trial.datetime_complete.timestamp() if trial.datetime_complete else None),
            epochs_reported=len(trial.intermediate_values),
            cost=dict(attrs.get(COST_ATTR) or {}),
            precision=str(attrs.get(PRECISION_ATTR, "")),
            precision_fallback=str(attrs.get(PRECISION_FALLBACK_ATTR, "")),
        )

    @property
    def has_model(self) -> bool:
        """Whether a trained model was saved (or reused) for this trial."""
        return bool(self.artifact_dir)

    @property
    def running(self) -> bool:
        """Whether the trial is training now."""
        return self.state == TrialState.RUNNING.name

    @property
    def counts_toward_budget(self) -> bool:
        """Whether the trial used up one trial of the search's budget.

        Complete and pruned trials count, and so does a trial that failed for a reason of
        its own (a diverging or impossible model). One interrupted or lost with its worker
        (no reason recorded) does not: it is retried.
        """
        if self.state in (TrialState.COMPLETE.name, TrialState.PRUNED.name):
            return True
        return self.state == TrialState.FAIL.name and bool(self.fail_reason)

    @property
    def best_val_mse(self) -> float:
        """The validation MSE of the trained model, or the best reported before pruning."""
        if "val_mse" in self.metrics:
            return float(self.metrics["val_mse"])
        curve = self.live.get("val_mse") or self.live.get("val_loss")
        if self.state == TrialState.PRUNED.name and curve:
            return float(min(curve))
        return math.nan

    @property
    def vs_pca_db(self) -> float:
        """Test PSNR minus PCA's with as many components (``latent_dim``), in dB.

        Negative means the model reconstructs worse than a linear projection keeping as
        many numbers per image. NaN when either is missing (trials stored before the PCA
        baseline was recorded, or whose baseline could not be computed).
        """
        try:
            value = float(self.metrics["test_psnr"]) - float(self.metrics["pca_psnr"])
        except (KeyError, TypeError, ValueError):
            return math.nan
        return value if math.isfinite(value) else math.nan

    @property
    def note(self) -> str:
        """A short reader's note: why it failed, when it was pruned, whose result it reuses."""
        if self.duplicate_of is not None and self.state == TrialState.PRUNED.name:
            return f"same configuration as trial {self.duplicate_of}, stopped at its rung"
        if self.state == TrialState.PRUNED.name:
            epochs = self.live.get("epochs")
            if epochs is not None and epochs < 1:
                return f"pruned after {epochs:.2g} of an epoch"
            return f"pruned after epoch {self.live.get('epoch', '?')}"
        if self.state == TrialState.FAIL.name:
            return self.fail_reason or "interrupted or worker lost; retried"
        if self.duplicate_of is not None:
            return f"same configuration as trial {self.duplicate_of}: not retrained"
        return self.precision_fallback


def read_trials(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of a study as a record, in trial-number order."""
    return [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]


def read_trials_once(study: optuna.Study, bulk: list | None = None) -> list[TrialRecord]:
    """Every trial of a study as a record, read for one table or page.

    On a relational storage the trials are read in bulk, in a fraction of Optuna's time for
    a large study (:mod:`automl_core.storage.bulk_read`); elsewhere, or where that read cannot be
    made, as :func:`read_trials`. A loop that polls one study (the search) should use
    :func:`read_trials`, whose Optuna cache re-reads only the trials that changed.

    Args:
        study: The study.
        bulk: Its trials already read by :func:`automl_core.storage.bulk_read.read_bulk` (a
            page that draws the table and the charts reads once). Defaults to None: read here.
    """

    bulk = read_bulk(study) if bulk is None else bulk
    if bulk is None:
        return read_trials(study)
    return [TrialRecord.from_frozen(t) for t in bulk]  # stand-ins with the same fields


@dataclass(frozen=True)
class BudgetCount:
    """How much of a search's trial budget is used.

    Attributes:
        done: Trials that count toward the budget (see
            :attr:`TrialRecord.counts_toward_budget`).
        running: Trials training now.
    """

    done: int
    running: int

    @classmethod
    def of(cls, records: list[TrialRecord], count_duplicates: bool = True) -> BudgetCount:
        """Counts a study's records.

        Args:
            records: The study's trials.
            count_duplicates: Whether a trial that reused an earlier one's result (a
                configuration proposed again) uses up the budget. A search over a finite
                space passes False: it ends when the space is exhausted instead (see
                :func:`settled_configurations`). Defaults to True.
        """
        return cls(
            done=sum(
                r.counts_toward_budget and (count_duplicates or r.duplicate_of is None)
                for r in records
            ),
            running=sum(r.running for r in records),
        )


def finished_twin(records: list[TrialRecord], config: dict[str, Any]) -> TrialRecord | None:
    """An earlier complete trial of the same configuration with its own saved model.

    Args:
        records: The study's trials.
        config: The configuration about to be trained.

    Returns:
        That trial's record, or None.
    """
    for record in records:
        if (
            record.state == TrialState.COMPLETE.name
            and record.has_model
            and record.duplicate_of is None
            and record.config == config
        ):
            return record
    return None


def stopped_twin(records: list[TrialRecord], config: dict[str, Any]) -> TrialRecord | None:
    """An earlier trial of the same configuration stopped by the pruner at a rung."""
    for record in records:
        if (
            record.state == TrialState.PRUNED.name
            and record.duplicate_of is None
            and record.config == config
        ):
            return record
    return None


def configuration_key(config: dict[str, Any], names) -> tuple:
    """A hashable identity of a configuration over the given parameter names."""
    return tuple((name, repr(config.get(name))) for name in sorted(names))


def settled_configurations(records: list[TrialRecord], names) -> set[tuple]:
    """Configurations (keys over ``names``) a search need not train again: trained to the
    end, stopped at a rung, or failed for a reason of their own."""
    return {
        configuration_key(r.config, names)
        for r in records
        if r.duplicate_of is None
        and (
            (r.state == TrialState.COMPLETE.name and r.has_model)
            or r.state == TrialState.PRUNED.name
            or (r.state == TrialState.FAIL.name and r.fail_reason)
        )
    }


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """The complete trial with a model and the lowest validation MSE, or None."""
    finished = [r for r in records if r.state == TrialState.COMPLETE.name and r.has_model]
    finished = [r for r in finished if "val_mse" in r.metrics]
    return min(finished, key=lambda r: r.metrics["val_mse"]) if finished else None


def failures_in_a_row(records: list[TrialRecord]) -> list[TrialRecord]:
    """The trials that failed for a reason of their own since the last success, latest last.

    A search whose every recent trial fails (a model that never fits in memory, a full
    disk) should stop and say why rather than keep proposing; pruned and complete trials
    end a run of failures, interrupted ones (retried) neither add to nor end it.
    """
    finished = sorted(
        (r for r in records if r.counts_toward_budget and r.finished_at is not None),
        key=lambda r: r.finished_at,  # type: ignore[arg-type, return-value]
    )
    run: list[TrialRecord] = []
    for record in finished:
        run = run + [record] if record.state == TrialState.FAIL.name else []
    return run


def fail_trial(storage: optuna.storages.BaseStorage, study_name: str, number: int, reason: str):
    """Marks another process's RUNNING trial failed for a reason, through the storage's API.

    Used by a supervisor whose worker died mid-trial: the trial then counts toward the
    budget with its reason instead of being retried forever.

    Args:
        storage: The study's storage.
        study_name: The study.
        number: The trial's number.
        reason: Why it failed, as :attr:`TrialRecord.fail_reason` will show it.
    """
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def note_attr(number: int) -> str:
    """The study attribute that holds a user's note on trial ``number``."""
    return f"{NOTE_ATTR_PREFIX}{int(number)}"


def trial_notes(study_attrs: dict[str, Any]) -> dict[int, str]:
    """Users' notes by trial number, read from a study's user attributes (empty ones left out).

    Args:
        study_attrs: ``study.user_attrs``.
    """
    notes = {}
    for key, value in study_attrs.items():
        number = key.removeprefix(NOTE_ATTR_PREFIX)
        if key.startswith(NOTE_ATTR_PREFIX) and number.isdigit() and isinstance(value, str):
            if value:
                notes[int(number)] = value
    return notes


def touch_study(study: optuna.Study) -> None:
    """Stamps a study as changed (a trial started or ended, a note was written), for readers
    that cache it."""
    study.set_user_attr(CHANGED_ATTR, f"{time.time():.6f}-{os.getpid()}")
