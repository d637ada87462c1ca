"""Reading results back: a study's trials as one table, and the best trial."""

from __future__ import annotations

import math

import optuna
import pandas as pd

from automl_core import store
from automl_core.search import CONFIG_ATTR, FAIL_REASON_ATTR, LIVE_ATTR, METRICS_ATTR

METRIC_COLUMNS = (
    "val_mse",
    "test_psnr",
    "test_ssim",
    "param_count",
    "compression_ratio",
    "train_seconds",
    "epochs",
)
EMPTY_COLUMNS = ["study", "trial", "state", *METRIC_COLUMNS, "has_model", "note"]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial of a study, one row each, best validation MSE first.

    Columns: ``study``, ``trial``, ``state``, the configuration parameters, the metrics of
    :class:`automl_core.training.TrialMetrics` (NaN where a trial has none), ``has_model``
    and ``note`` (why a trial failed or was pruned).

    Args:
        study: The study.

    Returns:
        The table; empty (with the columns) when the study has no trials.
    """
    rows = []
    for trial in study.get_trials(deepcopy=False):
        metrics = trial.user_attrs.get(METRICS_ATTR, {})
        live = trial.user_attrs.get(LIVE_ATTR, {})
        note = trial.user_attrs.get(FAIL_REASON_ATTR, "")
        if trial.state == optuna.trial.TrialState.PRUNED:
            note = f"pruned after epoch {live.get('epoch', '?')}"
        elif trial.state == optuna.trial.TrialState.FAIL and not note:
            note = "interrupted or worker lost; retried"
        elif "duplicate_of" in trial.user_attrs:
            note = f"same configuration as trial {trial.user_attrs['duplicate_of']}: not retrained"
        row = {"study": study.study_name, "trial": trial.number, "state": trial.state.name}
        row.update(trial.user_attrs.get(CONFIG_ATTR, trial.params))
        for column in METRIC_COLUMNS:
            row[column] = metrics.get(column, math.nan)
        if trial.state == optuna.trial.TrialState.PRUNED and live.get("val_loss"):
            row["val_mse"] = min(live["val_loss"])
            row["epochs"] = live.get("epoch", math.nan)
        row["has_model"] = store.ARTIFACT_ATTR in trial.user_attrs
        row["note"] = note
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
    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if store.ARTIFACT_ATTR in t.user_attrs
    ]
    if not finished:
        raise store.ArtifactMissing(
            f"study {study.study_name!r} has no finished trial with a model yet"
        )
    return min(finished, key=lambda t: t.user_attrs[METRICS_ATTR]["val_mse"])
