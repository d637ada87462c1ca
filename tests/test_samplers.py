"""The cost-aware TPE sampler: cheap start-up draws, a learned time model, cost in proposals."""

from __future__ import annotations

import datetime

import numpy as np
import optuna
import pytest

from automl_core.model.space import SearchSpace
from automl_core.search.samplers import PRIOR_OVERHEAD_WORK, CostAwareTPESampler
from automl_core.search.strategies import STRATEGIES, StrategyContext

SPACE = SearchSpace.from_dict(
    {
        "num_conv_layers": [1, 2, 3],
        "filters": [8, 16, 32, 64],
        "latent_dim": [8, 16, 32, 64],
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    }
)


def work_of(params: dict) -> float:
    """A stand-in for architecture work: grows with depth and quadratically with filters."""
    return params["num_conv_layers"] * params["filters"] ** 2 * 1e4


def loss_of(params: dict) -> float:
    """A smooth stand-in for validation loss: bigger latent and a mid learning rate win."""
    return 0.05 / params["latent_dim"] + 0.01 * abs(np.log10(params["learning_rate"]) + 2.5)


def _run(sampler: optuna.samplers.BaseSampler, n_trials: int) -> optuna.Study:
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        config = SPACE.suggest(trial)  # no epochs reported: the prior time model stays
        return loss_of(config.to_dict())

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials)
    return study


def _mean_work(study: optuna.Study) -> float:
    return float(np.mean([work_of(t.params) for t in study.trials]))


def test_start_up_draws_favour_cheap_architectures():
    cheap = _run(
        CostAwareTPESampler(SPACE.distributions(), work_of, seed=0, n_startup_trials=40), 40
    )
    uniform = _run(optuna.samplers.RandomSampler(seed=0), 40)
    assert _mean_work(cheap) < 0.5 * _mean_work(uniform)
    # every architecture stays possible: the draw is re-weighted, not restricted
    assert len({t.params["filters"] for t in cheap.trials}) >= 3


def test_proposals_weigh_cost_against_improvement():
    aware = _run(CostAwareTPESampler(SPACE.distributions(), work_of, seed=1), 30)
    plain = _run(optuna.samplers.TPESampler(seed=1, multivariate=True, n_startup_trials=5), 30)
    assert _mean_work(aware) < 0.5 * _mean_work(plain)
    # cost only breaks ties the loss cannot see: the search still finds a good configuration
    assert aware.best_value <= plain.best_value * 1.5


def test_first_trial_is_already_cost_weighted():
    sampler = CostAwareTPESampler(SPACE.distributions(), work_of, seed=0)
    study = optuna.create_study(sampler=sampler)
    trial = study.ask()
    # the space is known before any trial finished, so even trial 0 is sampled jointly
    assert set(trial.relative_params) == {
        "num_conv_layers",
        "filters",
        "latent_dim",
        "learning_rate",
    }


def _timed_trial(
    params: dict, seconds_per_epoch: float, epochs: int = 4
) -> optuna.trial.FrozenTrial:
    distributions = SPACE.distributions()
    fixed = {name: d.choices[0] for name, d in distributions.items() if d.single()}
    trial = optuna.trial.create_trial(
        params={**fixed, **params},
        distributions=distributions,
        value=0.01,
        intermediate_values={step: 0.02 for step in range(1, epochs + 1)},
    )
    trial.datetime_complete = trial.datetime_start + datetime.timedelta(
        seconds=seconds_per_epoch * epochs
    )
    return trial


def test_time_model_is_learned_from_the_study():
    sampler = CostAwareTPESampler(SPACE.distributions(), work_of, seed=0)
    study = optuna.create_study(sampler=sampler)
    base = {"num_conv_layers": 1, "latent_dim": 8, "learning_rate": 1e-3}
    # one architecture timed: not enough to fit, the prior stays
    study.add_trial(
        _timed_trial({**base, "filters": 8}, 0.5 + 1e-8 * work_of({**base, "filters": 8}))
    )
    sampler.fit_time_model(study.get_trials())
    assert sampler.predicted_cost({**base, "filters": 8}) == pytest.approx(
        PRIOR_OVERHEAD_WORK + 64e4
    )
    for filters in (16, 64):
        params = {**base, "filters": filters}
        study.add_trial(_timed_trial(params, 0.5 + 1e-8 * work_of(params)))
    sampler.fit_time_model(study.get_trials())
    # seconds = 0.5 + 1e-8 * work, so the overhead is worth 5e7 units of work
    assert sampler.predicted_cost({**base, "filters": 8}) == pytest.approx(5e7 + 64e4, rel=0.02)


def test_cost_aware_strategy_is_registered_with_the_real_work_model():
    sampler = STRATEGIES["tpe-cost"].make_sampler(StrategyContext(SPACE, 0, (28, 28, 1), 20))
    cheap = {"num_conv_layers": 1, "filters": 8, "latent_dim": 8, "learning_rate": 1e-3}
    costly = {**cheap, "num_conv_layers": 3, "filters": 64}
    assert sampler.predicted_cost(costly) > 5 * sampler.predicted_cost(cheap)


def test_unbuildable_configuration_costs_only_the_overhead():
    space = SearchSpace.from_dict(
        {"num_conv_layers": [1, 2], "kernel_size": [3, 5], "filters": [4]}
    )
    sampler = STRATEGIES["tpe-cost"].make_sampler(StrategyContext(space, 0, (4, 4, 1), 20))
    # a 4x4 image halved twice is 1x1 and builds; a 5x5 kernel on it cannot, nor can an
    # unknown block
    assert (
        sampler.predicted_cost({"num_conv_layers": 2, "kernel_size": 3, "filters": 4})
        > PRIOR_OVERHEAD_WORK
    )
    assert (
        sampler.predicted_cost({"num_conv_layers": 2, "kernel_size": 5, "filters": 4})
        == PRIOR_OVERHEAD_WORK
    )
    assert (
        sampler.predicted_cost(
            {"num_conv_layers": 2, "kernel_size": 5, "filters": 4, "block": "nonexistent"}
        )
        == PRIOR_OVERHEAD_WORK
    )


def test_a_discrete_space_is_not_proposed_twice_before_it_is_covered():
    space = SearchSpace.from_dict(
        {"num_conv_layers": [1, 2], "filters": [8, 16], "latent_dim": [8, 16]}
    )
    sampler = CostAwareTPESampler(space.distributions(), work_of, seed=0, n_startup_trials=3)
    study = optuna.create_study(sampler=sampler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(lambda trial: loss_of({**space.suggest(trial).to_dict()}), n_trials=8)
    configs = {
        (t.params["num_conv_layers"], t.params["filters"], t.params["latent_dim"])
        for t in study.trials
    }
    assert len(configs) == 8


def test_single_valued_ranges_enter_the_cost_with_their_value():
    space = SearchSpace.from_dict(
        {
            "num_conv_layers": {"low": 2, "high": 2},
            "filters": {"low": 16, "high": 16},
            "latent_dim": [8, 16],
            "learning_rate": [1e-3],
        }
    )
    sampler = CostAwareTPESampler(space.distributions(), work_of, seed=0)
    assert sampler.predicted_cost({"latent_dim": 8}) == PRIOR_OVERHEAD_WORK + 2 * 16**2 * 1e4
