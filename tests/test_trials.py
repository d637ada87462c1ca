"""The trial record: one reading of the stored fields, the budget rule, twins and the best."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from automl_core.storage import trials
from automl_core.storage.trials import BudgetCount, TrialRecord

DIST = {"filters": CategoricalDistribution([4, 8])}


def _trial(state: TrialState, filters: int = 4, value=None, **attrs):
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"filters": filters},
        distributions=DIST,
        user_attrs=attrs,
        intermediate_values={1: 0.5, 2: 0.4} if state == TrialState.PRUNED else None,
    )


def _study(*frozen) -> optuna.Study:
    study = optuna.create_study()
    for trial in frozen:
        study.add_trial(trial)
    return study


def test_record_reads_every_stored_field():
    frozen = _trial(
        TrialState.COMPLETE,
        value=0.01,
        config={"filters": 4, "latent_dim": 8},
        metrics={"val_mse": 0.01},
        worker="host:1",
        artifact_dir="s/trial_00000",
        retry_of=3,
    )
    record = TrialRecord.from_frozen(_study(frozen).trials[0])
    assert record.number == 0 and record.state == "COMPLETE"
    assert record.config == {"filters": 4, "latent_dim": 8} and record.params == {"filters": 4}
    assert record.metrics == {"val_mse": 0.01} and record.values == (0.01,)
    assert record.worker == "host:1" and record.retry_of == 3 and record.has_model
    assert record.best_val_mse == 0.01 and record.note == ""


def test_config_falls_back_to_the_sampled_parameters():
    record = TrialRecord.from_frozen(_study(_trial(TrialState.FAIL)).trials[0])
    assert record.config == {"filters": 4} and not record.has_model


@pytest.mark.parametrize(
    ("state", "attrs", "counts"),
    [
        (TrialState.COMPLETE, {}, True),
        (TrialState.PRUNED, {}, True),
        (TrialState.FAIL, {"fail_reason": "loss became NaN"}, True),
        (TrialState.FAIL, {}, False),  # interrupted: retried, not counted
    ],
)
def test_budget_rule(state, attrs, counts):
    record = TrialRecord.from_frozen(_study(_trial(state, value=0.1, **attrs)).trials[0])
    assert record.counts_toward_budget is counts


def test_budget_count_adds_running_trials():
    study = _study(_trial(TrialState.COMPLETE, value=0.1), _trial(TrialState.FAIL))
    study.ask()  # a RUNNING trial
    count = BudgetCount.of(trials.read_trials(study))
    assert (count.done, count.running) == (1, 1)


def test_notes_say_why():
    pruned = _trial(TrialState.PRUNED, live={"epoch": 2, "val_loss": [0.5, 0.4]})
    failed = _trial(TrialState.FAIL, fail_reason="impossible configuration: too deep")
    lost = _trial(TrialState.FAIL)
    twin = _trial(TrialState.COMPLETE, value=0.1, duplicate_of=0)
    records = trials.read_trials(_study(pruned, failed, lost, twin))
    assert [r.note for r in records] == [
        "pruned after epoch 2",
        "impossible configuration: too deep",
        "interrupted or worker lost; retried",
        "same configuration as trial 0: not retrained",
    ]
    assert records[0].best_val_mse == 0.4 and math.isnan(records[1].best_val_mse)


def test_finished_twin_is_an_original_complete_trial_with_a_model():
    config = {"filters": 4}
    original = _trial(TrialState.COMPLETE, value=0.1, config=config, artifact_dir="a")
    copy = _trial(TrialState.COMPLETE, value=0.1, config=config, artifact_dir="a", duplicate_of=0)
    no_model = _trial(TrialState.COMPLETE, value=0.1, config={"filters": 8})
    records = trials.read_trials(_study(copy, no_model, original))
    assert trials.finished_twin(records, config).number == 2
    assert trials.finished_twin(records, {"filters": 8}) is None


def test_best_record_has_the_lowest_val_mse_and_a_model():
    a = _trial(TrialState.COMPLETE, value=0.2, metrics={"val_mse": 0.2}, artifact_dir="a")
    b = _trial(TrialState.COMPLETE, value=0.1, metrics={"val_mse": 0.1}, artifact_dir="b")
    c = _trial(TrialState.COMPLETE, value=0.05, metrics={"val_mse": 0.05})  # model missing
    assert trials.best_record(trials.read_trials(_study(a, b, c))).number == 1
    assert trials.best_record([]) is None
