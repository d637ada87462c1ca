"""Reading results back: a study's trials as one table, and the best trial."""

from __future__ import annotations

import math

import optuna
import pandas as pd

from automl_core.errors import ArtifactMissing
from automl_core.storage.trials import TrialRecord, best_record, read_trials_once, trial_notes

METRIC_COLUMNS = (
    "val_mse",
    "test_psnr",
    # test PSNR minus PCA's with as many components (TrialRecord.vs_pca_db)
    "vs_pca_db",
    "test_ssim",
    # linear-probe accuracy on the latent codes (labelled datasets only)
    "probe_accuracy",
    "param_count",
    "compression_ratio",
    "train_seconds",
    "epochs",
    "pca_psnr",
)
# what the leaderboard's "vs PCA" column means, for every place that shows it
VS_PCA_HELP = (
    "test PSNR minus PCA's with as many components (latent_dim), fitted on the same "
    "training split; negative = worse than a linear projection"
)
PROBE_HELP = (
    "test accuracy of a logistic regression that reads the class off the latent code, "
    "fitted on the training split's codes: how much of the labels the code keeps"
)
EMPTY_COLUMNS = [
    "study",
    "trial",
    "state",
    *METRIC_COLUMNS,
    "user_note",
    "precision",
    "has_model",
    "note",
]


def trials_frame(study: optuna.Study, bulk: list | None = None) -> pd.DataFrame:
    """Every trial of a study, one row each, best validation MSE first.

    Columns: ``study``, ``trial``, ``state``, the configuration parameters, the metrics of
    :class:`automl_core.model.training.TrialMetrics` (NaN where a trial has none), ``pca_psnr``
    (PCA with ``latent_dim`` components on the same split) and ``vs_pca_db`` (test PSNR
    minus it, see :data:`VS_PCA_HELP`; NaN for trials stored before it), ``probe_accuracy``
    (a linear probe's test accuracy on the latent codes, :data:`PROBE_HELP`; NaN for an
    unlabelled dataset and for trials stored before it), ``precision``
    (the Keras policy it trained with), ``has_model``, ``note`` (why a trial failed or
    was pruned, or why it was retried in float32) and ``user_note`` (what a user wrote on
    it, :func:`automl_core.analysis.leaderboard.annotate_trial`; '' when nothing).

    Args:
        study: The study.
        bulk: Its trials already read in bulk (:func:`automl_core.storage.bulk_read.read_bulk`).
            Defaults to None: read here.

    Returns:
        The table; empty (with the columns) when the study has no trials.
    """
    records = read_trials_once(study, bulk)
    return records_frame(study.study_name, records, trial_notes(study.user_attrs))


def records_frame(
    study_name: str, records: list[TrialRecord], notes: dict[int, str] | None = None
) -> pd.DataFrame:
    """Trial records as the table :func:`trials_frame` describes.

    Args:
        study_name: The study the records belong to (the ``study`` column).
        records: Its trials.
        notes: Users' notes by trial number (:func:`automl_core.storage.trials.trial_notes`).
            Defaults to None (none).

    Returns:
        The table, best validation MSE first.
    """
    rows = []
    for record in records:
        row = {"study": study_name, "trial": record.number, "state": record.state}
        row.update(record.config)
        for column in METRIC_COLUMNS:
            row[column] = record.metrics.get(column, math.nan)
        # blank for trials stored before the PCA baseline was recorded
        row["vs_pca_db"] = record.vs_pca_db
        row["user_note"] = (notes or {}).get(record.number, "")
        if record.state == "PRUNED" and record.live.get("val_loss"):
            row["val_mse"] = record.best_val_mse
            row["epochs"] = record.live.get("epoch", math.nan)
        # trials stored before precision was recorded trained in float32
        row["precision"] = record.precision or ("float32" if record.has_model else "")
        row["has_model"] = record.has_model
        row["note"] = record.note
        rows.append(row)
    return sort_trials(pd.DataFrame(rows, columns=None if rows else EMPTY_COLUMNS))


def sort_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """Complete trials first, then pruned, running and the rest; lowest validation MSE first."""
    if frame.empty:
        return frame.reset_index(drop=True)
    finished_first = frame["state"].map({"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2}).fillna(3)
    frame = frame.assign(_order=finished_first).sort_values(
        ["_order", "val_mse", "study", "trial"]
    )
    return frame.drop(columns="_order").reset_index(drop=True)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The complete trial with a model and the lowest validation MSE.

    Raises:
        ArtifactMissing: No trial has finished with a model yet.
    """
    best = best_record(read_trials_once(study))
    if best is None:
        raise ArtifactMissing(f"study {study.study_name!r} has no finished trial with a model yet")
    # that trial alone, not every trial of a large study
    storage = study._storage
    return storage.get_trial(
        storage.get_trial_id_from_study_id_trial_number(study._study_id, best.number)
    )
