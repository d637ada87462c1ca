"""Trials read in bulk from the storage's tables mean the same as trials read through Optuna."""

from __future__ import annotations

import math
import uuid

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from automl_core.storage import bulk_read, results, store
from automl_core.storage.trials import read_trials, read_trials_once


def _trials() -> list:
    """Every kind of field a record reads: states, values (inf too), parameters of each
    distribution kind, nested user attributes, intermediate values, unfinished trials."""
    distributions = {
        "filters": IntDistribution(4, 64, log=True),
        "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
        "activation": CategoricalDistribution(["relu", "elu"]),
        "linear_path": CategoricalDistribution([False, True]),
    }
    out = []
    for number in range(7):
        state = [
            TrialState.COMPLETE,
            TrialState.PRUNED,
            TrialState.FAIL,
            TrialState.COMPLETE,
            TrialState.WAITING,
            TrialState.COMPLETE,
            TrialState.COMPLETE,
        ][number]
        params = {
            "filters": 4 * (number + 1),
            "learning_rate": 1e-3 * (1 + number / 10),
            "activation": "elu" if number % 2 else "relu",
            "linear_path": bool(number % 3 == 0),
        }
        value = [0.01 * (number + 1), math.inf if number == 6 else 20.0 + number]
        attrs = {
            "config": {**params, "latent_dim": 8},
            "metrics": {"val_mse": value[0], "test_psnr": 20.0 + number, "pca_psnr": 21.0},
            "live": {"epoch": 2, "loss": [0.1, 0.05], "val_loss": [0.2, 0.1]},
            "worker": "w1",
            "artifact_dir": f"trial_{number}" if state == TrialState.COMPLETE else "",
        }
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "diverged: loss became nan"
        out.append(
            create_trial(
                state=state,
                values=value if state == TrialState.COMPLETE else None,
                params=params if state != TrialState.WAITING else {},
                distributions=distributions if state != TrialState.WAITING else {},
                user_attrs=attrs,
                intermediate_values={0: 0.3, 1: 0.2} if state != TrialState.WAITING else {},
            )
        )
    return out


def _same(study: optuna.Study) -> None:
    bulk = read_trials_once(study)
    assert bulk_read.read_bulk(study) is not None  # the bulk path was taken
    slow = read_trials(study)
    assert bulk == slow
    assert [r.number for r in bulk] == list(range(len(slow)))


def test_sqlite_bulk_read_equals_optuna(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(
        study_name="bulk", storage=store.open_storage(url), directions=["minimize", "maximize"]
    )
    study.add_trials(_trials())
    _same(store.load_study("bulk", url))


def test_a_running_trial_reads_the_same(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="live", storage=store.open_storage(url))
    trial = study.ask({"filters": IntDistribution(4, 64)})
    trial.set_user_attr("live", {"epoch": 1, "loss": [0.5]})
    trial.report(0.5, 0)
    _same(store.load_study("live", url))


def test_the_tiny_study_and_its_best_trial(tiny_study):
    name, url = tiny_study
    study = store.load_study(name, url)
    _same(study)
    best = results.best_trial(study)
    by_optuna = min(
        (t for t in study.get_trials() if t.state == TrialState.COMPLETE),
        key=lambda t: t.user_attrs["metrics"]["val_mse"],
    )
    assert best.number == by_optuna.number and best.params == by_optuna.params


def test_memory_storage_reads_through_optuna():
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trials(_trials()[:2])
    assert bulk_read.read_bulk(study) is None
    assert len(read_trials_once(study)) == 2


def test_an_unknown_schema_falls_back(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(
        study_name="odd", storage=store.open_storage(url), directions=["minimize", "maximize"]
    )
    study.add_trials(_trials()[:3])

    def broken(storage, study_id):
        raise RuntimeError("no such column: trials.number")

    monkeypatch.setattr(bulk_read, "_read", broken)
    assert bulk_read.read_bulk(study) is None
    assert [r.number for r in read_trials_once(study)] == [0, 1, 2]


@pytest.mark.postgres
def test_postgresql_bulk_read_equals_optuna(postgres_url):
    name = f"bulk-{uuid.uuid4().hex[:8]}"
    storage = store.open_storage(postgres_url)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=["minimize", "maximize"]
        )
        study.add_trials(_trials())
        _same(store.load_study(name, postgres_url))
    finally:
        optuna.delete_study(study_name=name, storage=storage)
