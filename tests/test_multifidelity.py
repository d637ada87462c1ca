"""Multi-fidelity search: report points in thirds of an epoch, rungs, the seconds model."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from automl_core.errors import StorageError
from automl_core.model.datasets import load_dataset
from automl_core.model.space import SearchSpace
from automl_core.search import runner as search
from automl_core.search.pruners import PromotingHalvingPruner
from automl_core.search.runner import run_search, trial_reporter
from automl_core.search.samplers import CostAwareTPESampler, SecondsModel
from automl_core.search.strategies import (
    STRATEGIES,
    StrategyContext,
    first_rung_thirds,
)
from automl_core.storage.settings import DEFAULT_STRATEGY, SearchSettings
from automl_core.storage.trials import COST_ATTR, PROMOTED_FROM_ATTR, read_trials

SPACE = SearchSpace.from_dict({"num_conv_layers": [1, 2], "filters": [4, 8], "latent_dim": [4]})


def test_multi_fidelity_strategy_reports_thirds_and_halves_successively():
    strategy = STRATEGIES["tpe-cost-asha"]
    context = StrategyContext(SPACE, 0, (8, 8, 1), 6, train_images=100)
    assert strategy.reports_per_epoch == 3 and strategy.prunes
    assert isinstance(strategy.make_pruner(context), PromotingHalvingPruner)
    assert isinstance(strategy.make_sampler(context), CostAwareTPESampler)
    assert DEFAULT_STRATEGY in STRATEGIES


def test_reporter_steps_are_thirds_of_an_epoch_and_timings_are_stored():
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    reporter = trial_reporter(trial, prune=True, deadline=None, max_epochs=3, reports_per_epoch=3)
    for index, epochs in enumerate((1 / 3, 2 / 3, 1.0, 2.0)):
        reporter.on_epoch_end(
            index, {"loss": 0.1, "val_loss": 0.2, "val_mse": 0.05, "epochs": epochs}
        )
    frozen = study.trials[0]
    assert sorted(frozen.intermediate_values) == [1, 2, 3, 6]
    cost = frozen.user_attrs[COST_ATTR]
    assert cost["first_report_epochs"] == pytest.approx(1 / 3)
    assert cost["first_report_seconds"] >= 0 and cost["epoch_seconds"] >= 0
    live = frozen.user_attrs["live"]
    assert live["epoch"] == 2 and live["epochs"] == 2.0 and live["val_mse"] == [0.05] * 4


def test_first_rung_is_a_few_thousand_images_a_share_of_a_large_data_set():
    assert first_rung_thirds(3_900) == 3  # mnist-5k: one epoch
    assert first_rung_thirds(8_000) == 2
    assert first_rung_thirds(45_000) == 1  # a third of the images
    assert first_rung_thirds(50) == 3


def _report_first_rung(study: optuna.Study, value: float) -> bool:
    """Runs one trial to the first rung (a third of an epoch); True when it goes on."""
    trial = study.ask()
    reporter = trial_reporter(trial, True, None, max_epochs=6, reports_per_epoch=3)
    try:
        reporter.on_epoch_end(0, {"val_mse": value, "epochs": 1 / 3})
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return False
    study.tell(trial, value)
    return True


def test_first_rung_waits_for_three_rivals_and_promotes_the_best_stopped_one():
    context = StrategyContext(SPACE, 0, (8, 8, 1), 6, train_images=45_000)
    study = optuna.create_study(pruner=STRATEGIES["tpe-cost-asha"].make_pruner(context))
    assert isinstance(study.pruner, PromotingHalvingPruner)
    # the first two stop at the first rung: nothing to compare them with yet
    assert [_report_first_rung(study, v) for v in (0.02, 0.01)] == [False, False]
    assert study.pruner.promote(study) == 0
    # the third is compared with them: the worst of three stops
    assert _report_first_rung(study, 0.5) is False
    assert study.pruner.promote(study) == 1  # the best of the three runs again
    queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs[PROMOTED_FROM_ATTR] for t in queued] == [1]
    assert study.pruner.promote(study) == 0  # once only
    # a better fourth goes on at once
    assert _report_first_rung(study, 0.001) is True


class TestSecondsModel:
    def test_prior_until_a_trial_is_timed(self):
        model = SecondsModel(4000)
        assert model.setup > 0 and model.epoch(2e6) > model.epoch(1e6) > 0

    def test_one_timed_trial_scales_the_prior_to_this_machine(self):
        model = SecondsModel(4000)
        prior = model.epoch(1e6)
        cost = {"first_report_seconds": 2.0, "first_report_epochs": 1 / 3, "epoch_seconds": 3.0}
        model.fit([(1e6, cost)])
        assert model.epoch(1e6) == pytest.approx(3.0)
        assert model.epoch(1e6) / prior == pytest.approx(
            model.epoch(4e6) / SecondsModel().epoch(4e6)
        )
        assert model.setup == pytest.approx(2.0 - 1.0)

    def test_two_architectures_fit_both_parts(self):
        model = SecondsModel(1000)
        points = []
        for work in (1e6, 5e6, 2e7):
            epoch = 0.2 + 1e-7 * work
            points.append(
                (
                    work,
                    {
                        "first_report_seconds": 1.5 + epoch / 3,
                        "first_report_epochs": 1 / 3,
                        "epoch_seconds": epoch,
                    },
                )
            )
        model.fit(points)
        assert model.epoch(1e7) == pytest.approx(0.2 + 1.0, rel=1e-3)
        assert model.setup == pytest.approx(1.5, rel=1e-3)

    def test_first_reports_alone_scale_everything(self):
        model = SecondsModel(4000)
        first = SecondsModel(4000).setup + SecondsModel(4000).epoch(1e6) / 3
        model.fit([(1e6, {"first_report_seconds": 2 * first, "first_report_epochs": 1 / 3})])
        assert model.setup + model.epoch(1e6) / 3 == pytest.approx(2 * first)


def test_sampler_predicts_seconds_to_the_first_rung_from_the_study():
    distributions = SPACE.distributions()
    sampler = CostAwareTPESampler(
        distributions, lambda p: p["filters"] * 1e6, seed=0, fidelity_epochs=1 / 3
    )
    study = optuna.create_study(sampler=sampler)
    fixed = {name: d.choices[0] for name, d in distributions.items() if d.single()}
    for filters, seconds in ((4, 1.0), (8, 2.0)):
        trial = optuna.trial.create_trial(
            params={**fixed, "num_conv_layers": 1, "filters": filters},
            distributions=distributions,
            value=0.1,
            user_attrs={
                COST_ATTR: {
                    "first_report_seconds": 0.5 + seconds / 3,
                    "first_report_epochs": 1 / 3,
                    "epoch_seconds": seconds,
                }
            },
        )
        study.add_trial(trial)
    sampler.fit_time_model(study.get_trials())
    assert sampler.predicted_cost({"num_conv_layers": 1, "filters": 8}) == pytest.approx(
        0.5 + 2.0 / 3, rel=1e-3
    )


def test_shared_dataset_round_trips(runs_dir):
    data = load_dataset("digits", max_images=60)
    settings = SearchSettings(study="share", dataset="digits", max_images=60)
    search._share_dataset(data, settings, "run1")
    loaded = search._shared_dataset(settings, "run1")
    assert loaded is not None and loaded.class_names == data.class_names
    for name in ("x_train", "x_val", "x_test", "y_train", "y_val", "y_test"):
        assert np.array_equal(getattr(loaded, name), getattr(data, name))
    assert search._shared_dataset(settings, "other-run") is None


def test_a_started_worker_gives_up_when_its_study_never_comes(runs_dir):
    with pytest.raises(StorageError, match="was not prepared"):
        search._wait_for_run("never", None, "run1", timeout=0.3)


@pytest.mark.slow
def test_multi_fidelity_search_runs_and_records_fractions(runs_dir):
    settings = SearchSettings(
        study="mf",
        dataset="digits",
        space={"num_conv_layers": [1], "filters": [4, 8], "latent_dim": [4, 8]},
        strategy="tpe-cost-asha",
        trials=4,
        max_epochs=2,
        max_images=120,
    )
    records = read_trials(run_search(settings))
    assert len(records) == 4
    assert {r.state for r in records} <= {"COMPLETE", "PRUNED"}
    for record in records:
        assert record.cost["first_report_epochs"] == pytest.approx(1 / 3, abs=0.2)
        assert record.live["epochs"] >= record.cost["first_report_epochs"]
    assert any("val_mse" in r.metrics for r in records)
